"""`compare` on a val split that holds no images: one line, not torch.cat's traceback."""

import pytest

from conftest import tiny_overrides
from inference.errors import UsageError
from training.__main__ import main


def test_compare_with_val_size_0_says_the_split_is_empty(tiny_run, tmp_path, capsys):
    """`compare A B --val-size 0` ended in 'ValueError: torch.cat(): expected a non-empty list of Tensors'."""
    assert main(["compare", str(tiny_run), str(tiny_run), "--val-size", "0", "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "torch.cat" not in err, err
    said = [line for line in err.splitlines() if "error:" in line]  # beside the progress bar's lines
    assert len(said) == 1 and said[0].startswith("error:"), err
    assert "split 'val' has no samples (--val-size 0 holds out none: give a larger one" in said[0], err


def test_compare_of_a_run_that_held_out_nothing_says_so(image_folder, tmp_path):
    """A run trained with data.val_size=0 has no val split to compare on: the same traceback."""
    from training.config_recipes import build_config
    from training.engine import train
    from training.reports.compare import compare

    run = tmp_path / "run"
    train(
        build_config(
            "resnet9_half_cpu", tiny_overrides(image_folder, tmp_path / "cache", epochs=1, **{"data.val_size": 0})
        ),
        run,
    )
    with pytest.raises(UsageError, match=r"has no samples \(the run held out none: data.val_size=0; .*--split all\)"):
        compare(run, run, device="cpu")

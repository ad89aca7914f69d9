"""An export checked on fewer images (--max-val-images) records its figures on those. `export verify` without
the checkpoint can compare only on the same images: its refusal said it had no figure on the full split, not
that one was recorded on fewer, nor the flag that makes the check comparable."""

from __future__ import annotations

import shutil

from export.__main__ import main as export_main
from export.pipeline import export_checkpoint


def test_verify_of_a_quick_export_without_its_checkpoint_names_the_images_its_figure_was_recorded_on(
    tiny_run, tmp_path, capsys
):
    checkpoint = tmp_path / "run" / "best.pt"
    checkpoint.parent.mkdir()
    shutil.copy(tiny_run / "best.pt", checkpoint)
    models = tmp_path / "models"
    export_checkpoint(checkpoint, "quick", "fp32", models, cache_dir=None, max_val_images=8)
    checkpoint.unlink()  # a fresh clone
    capsys.readouterr()

    verify = ["verify", "quick", "--models-dir", str(models), "--cache-dir", ""]
    assert export_main(verify) == 2
    err = capsys.readouterr().err
    assert "no checkpoint and no recorded PyTorch accuracy on the same " in err, err
    assert err.rstrip().endswith(": it was recorded on 8, pass --max-val-images 8"), err
    assert export_main([*verify, "--max-val-images", "8"]) == 0  # the advice, followed

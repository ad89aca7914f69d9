"""`train --resume` with another epoch count is refused as another configuration; the command its refusal advises
must be one resume accepts, or the refusal says where the run stands instead (training/resume.py)."""

from __future__ import annotations

from pathlib import Path

from conftest import tiny_overrides
from training.__main__ import main as training_main
from training.checkpoint import load_checkpoint
from training.engine import Trainer

RECIPE = "resnet9_half_cpu"


def _train(run: Path, overrides: list[str], resume: bool = False) -> int:
    return training_main(
        ["train", "--recipe", RECIPE, "--set", *overrides, "--out", str(run), *(["--resume"] * resume)]
    )


def _refusal(run: Path, overrides: list[str], capsys) -> str:
    capsys.readouterr()
    assert _train(run, overrides, resume=True) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    return err.rstrip()


def test_a_run_given_more_epochs_is_said_to_have_finished_not_advised_a_refused_command(image_folder, tmp_path, capsys):
    """Trained 1 epoch, resumed to 2, then the first command again: it advised `resume RUN --epochs 1` ("to train
    it to 1 epochs"), which resume refused as training none."""
    run = tmp_path / "run"
    one = tiny_overrides(image_folder, tmp_path / "cache", epochs=1, max_batches_per_epoch=1)
    assert _train(run, one) == 0
    assert training_main(["resume", str(run), "--epochs", "2"]) == 0
    err = _refusal(run, one, capsys)
    assert "train.epochs: 2 -> 1" in err and "--epochs 1" not in err and "1 epochs" not in err, err
    assert err.endswith(
        f"; it has finished at 2 epochs: to train it further, python -m training resume {run} --epochs N with N above 2"
    ), err
    assert training_main(["resume", str(run), "--epochs", "3"]) == 0


def test_a_run_under_way_asked_for_the_epochs_it_has_trained_is_advised_the_rest(
    image_folder, tmp_path, capsys, monkeypatch
):
    """Stopped after 2 of its 3 epochs and asked for 2: `resume --epochs 2` is refused (it would end the run
    without its last epoch's work); the plain resume trains the rest."""
    run = tmp_path / "run"
    three = tiny_overrides(image_folder, tmp_path / "cache", epochs=3, max_batches_per_epoch=1)
    real_epoch = Trainer.train_epoch

    def stopped_at_three(self):
        if self.epoch == 2:
            raise KeyboardInterrupt
        return real_epoch(self)

    monkeypatch.setattr(Trainer, "train_epoch", stopped_at_three)
    assert _train(run, three) != 0  # the command says where it was interrupted
    monkeypatch.setattr(Trainer, "train_epoch", real_epoch)
    assert load_checkpoint(run / "last.pt")["epoch"] == 2
    two = [s if not s.startswith("epochs=") else "epochs=2" for s in three]
    err = _refusal(run, two, capsys)
    assert "--epochs" not in err, err
    assert err.endswith(f"; it has trained 2 of its 3 epochs already: python -m training resume {run} trains the rest")
    assert training_main(["resume", str(run)]) == 0
    assert load_checkpoint(run / "last.pt")["epoch"] == 3


def test_a_run_that_stopped_early_is_not_advised_more_epochs(image_folder, tmp_path, capsys):
    """Its patience ended it: `resume --epochs 4`, which the refusal advised, is refused as training none."""
    run = tmp_path / "run"
    overrides = tiny_overrides(
        image_folder, tmp_path / "cache", epochs=3, lr=1e-9, early_stop_patience=1, early_stop_min_delta=2.0
    )
    assert _train(run, overrides) == 0
    assert load_checkpoint(run / "last.pt")["epoch"] == 2
    more = [s if not s.startswith("epochs=") else "epochs=4" for s in overrides]
    err = _refusal(run, more, capsys)
    assert "--epochs" not in err, err
    assert err.endswith(
        "; it stopped early at epoch 2 (early_stop_patience 1), so no epoch count trains it further: start a new run "
        "in another folder to train on"
    ), err


def test_more_epochs_are_still_advised_where_resume_gives_them(image_folder, tmp_path, capsys):
    run = tmp_path / "run"
    one = tiny_overrides(image_folder, tmp_path / "cache", epochs=1, max_batches_per_epoch=1)
    assert _train(run, one) == 0
    two = [s if not s.startswith("epochs=") else "epochs=2" for s in one]
    assert _refusal(run, two, capsys).endswith(f"; to train it to 2 epochs: python -m training resume {run} --epochs 2")

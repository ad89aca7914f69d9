"""Resume and checkpoint integrity: what a run folder left by a stop at any point, or with a file that is not its
own, resumes to (training/resume.py, training/checkpoint.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import training.engine as engine
from conftest import tiny_overrides
from training.__main__ import main as training_main
from training.checkpoint import load_checkpoint, model_from_checkpoint, save_model_checkpoint
from training.config_recipes import build_config
from training.engine import Trainer, train
from training.lookahead import Lookahead
from training.resume import resume, sized_to_the_run

RECIPE = "resnet9_half_cpu"


def _train_one_epoch(image_folder: Path, tmp_path: Path) -> Path:
    run = tmp_path / "run"
    overrides = tiny_overrides(image_folder, tmp_path / "cache", epochs=1)
    assert training_main(["train", "--recipe", RECIPE, "--set", *overrides, "--out", str(run)]) == 0
    return run


def _one_line_refusal(run: Path, capsys) -> str:
    capsys.readouterr()
    assert training_main(["resume", str(run), "--epochs", "2"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    return err


def test_a_network_alone_copied_over_last_pt_is_refused_in_one_line(image_folder, tmp_path, capsys):
    """A checkpoint with no training state (an ensemble's, a recovered network's) copied over a run's last.pt
    ended the resume in a KeyError traceback ('config')."""
    run = _train_one_epoch(image_folder, tmp_path)
    ckpt = load_checkpoint(run / "last.pt")
    save_model_checkpoint(ckpt["meta"], model_from_checkpoint(ckpt), run / "last.pt")
    err = _one_line_refusal(run, capsys)
    assert f"{run / 'last.pt'} holds a network without the training state a run continues from" in err
    assert "best.pt (epoch 1) holds the whole training state too: copy it over last.pt" in err


def test_a_last_pt_whose_weights_do_not_fit_its_network_is_refused_in_one_line(image_folder, tmp_path, capsys):
    """A last.pt whose weights another version of the network's code wrote (a layer renamed) ended the resume in
    torch's traceback, a line per mismatched tensor."""
    run = _train_one_epoch(image_folder, tmp_path)
    ckpt = torch.load(run / "last.pt", weights_only=True)
    renamed = next(iter(ckpt["model"]))
    ckpt["model"][f"renamed_{renamed}"] = ckpt["model"].pop(renamed)
    torch.save(ckpt, run / "last.pt")
    err = _one_line_refusal(run, capsys)
    assert "last.pt does not fit the resnet9 network and sgd optimizer its configuration builds" in err
    assert renamed in err


@pytest.mark.parametrize("stopped_at", [2, 3])
def test_a_stop_between_writing_best_and_last_goes_on_from_the_later_best(
    image_folder, tmp_path, monkeypatch, stopped_at
):
    """best.pt is written before last.pt: a stop between the two (a kill, a full disk) left best.pt an epoch
    ahead, and the resume trained that epoch again from last.pt. On a GPU, or resumed elsewhere, the epoch trained
    again gives other numbers, and best.pt was then left holding an epoch the run's history does not have. Stopped
    so at its last epoch, the run is finished: its last.pt, history and summary say so too."""
    overrides = tiny_overrides(image_folder, tmp_path / "cache", epochs=3)
    # every epoch a new best, so that epoch 2 writes best.pt, whatever its score
    monkeypatch.setattr(Trainer, "_improves", lambda self, score: True)
    train(build_config(RECIPE, overrides), tmp_path / "straight")
    real_save = engine.save_checkpoint

    def stopped_before_last(state, path):
        if path.name == "last.pt" and state["epoch"] == stopped_at:
            raise KeyboardInterrupt
        real_save(state, path)

    monkeypatch.setattr(engine, "save_checkpoint", stopped_before_last)
    run = tmp_path / "interrupted"
    with pytest.raises(KeyboardInterrupt):
        train(build_config(RECIPE, overrides), run)
    monkeypatch.setattr(engine, "save_checkpoint", real_save)
    assert load_checkpoint(run / "best.pt")["epoch"] == stopped_at
    assert load_checkpoint(run / "last.pt")["epoch"] == stopped_at - 1
    kept = load_checkpoint(run / "best.pt")["history"]

    trained: list[int] = []
    real_epoch = Trainer.train_epoch

    def counted(self):
        trained.append(self.epoch + 1)
        return real_epoch(self)

    monkeypatch.setattr(Trainer, "train_epoch", counted)
    summary = resume(run)
    assert trained == list(range(stopped_at + 1, 4))  # the epoch whole in best.pt is not trained again
    history = json.loads((run / "history.json").read_text())
    assert history[:stopped_at] == kept and len(history) == 3
    assert summary["epochs_run"] == 3 and json.loads((run / "summary.json").read_text()) == summary
    assert summary["best"]["epoch"] == load_checkpoint(run / "best.pt")["epoch"]
    a, b = (load_checkpoint(folder / "last.pt")["model"] for folder in (tmp_path / "straight", run))
    assert all(torch.equal(a[key], b[key]) for key in a)


@pytest.mark.parametrize("copied", ["best.pt", "last.pt"])
def test_a_checkpoint_of_another_run_copied_into_a_run_folder_is_refused_in_one_line(
    image_folder, tmp_path, capsys, copied
):
    """Another run's last.pt copied over a run's last.pt (or best.pt) resumed as the other run, beside a best.pt
    of another network that evaluate and export read as the run's, until the other run beat its own best."""
    run = _train_one_epoch(image_folder, tmp_path)
    other = tmp_path / "other"
    overrides = tiny_overrides(image_folder, tmp_path / "cache", epochs=2, **{"model.args": "{width: 16}"})
    train(build_config(RECIPE, overrides), other)
    (run / copied).write_bytes((other / "last.pt").read_bytes())
    kept = {name: (run / name).read_bytes() for name in ("best.pt", "last.pt")}
    err = _one_line_refusal(run, capsys)
    assert f"{run / 'best.pt'} (epoch " in err and "are of two different runs" in err
    assert {name: (run / name).read_bytes() for name in kept} == kept


def _lookahead_overrides(image_folder: Path, cache: Path) -> list[str]:
    return tiny_overrides(
        image_folder,
        cache,
        **{"model.name": "airbench94", "model.args": "{widths: [8, 8, 8]}"},
        epochs=6,
        lookahead_every=3,  # 2 steps an epoch: epoch 2 ends between merges, on the fast weights
        early_stop_patience=1,
        early_stop_min_delta=1.0,  # no epoch after the first can improve by that
    )


def test_an_early_stopped_lookahead_run_stopped_before_its_finish_resumes_to_the_same_weights(
    image_folder, tmp_path, monkeypatch
):
    """An early stop with lookahead saves its slow weights after the epoch that spent its patience. A stop between
    the two saves left a last.pt that resumed as finished, on the fast weights: never the run's result."""
    overrides = _lookahead_overrides(image_folder, tmp_path / "cache")
    straight = train(build_config("airbench94", overrides), tmp_path / "straight")
    assert straight["stopped_early"] and straight["epochs_run"] == 2

    def stopped(self, model):
        raise KeyboardInterrupt

    real_finish = Lookahead.finish
    monkeypatch.setattr(Lookahead, "finish", stopped)
    with pytest.raises(KeyboardInterrupt):
        train(build_config("airbench94", overrides), tmp_path / "interrupted")
    monkeypatch.setattr(Lookahead, "finish", real_finish)
    again = resume(tmp_path / "interrupted")
    assert again["stopped_early"] and again["epochs_run"] == 2
    a, b = (load_checkpoint(tmp_path / folder / "last.pt") for folder in ("straight", "interrupted"))
    assert all(torch.equal(a["model"][key], b["model"][key]) for key in a["model"])
    assert [h["val_top1"] for h in a["history"]] == [h["val_top1"] for h in b["history"]]


def test_more_epochs_for_a_pruning_run_are_said_to_reshape_its_pruning(image_folder, tmp_path):
    """Pruning stops at train.prune_until of the run's epochs: more epochs move that stop (a run past it prunes
    again, on losses recorded epochs before), which resume --epochs warns of as it does of a schedule's shape."""
    overrides = tiny_overrides(
        image_folder, tmp_path / "cache", epochs=4, prune_ratio=0.5, prune_until=0.75, **{"schedule.name": "constant"}
    )
    said = " and ".join(sized_to_the_run(build_config(RECIPE, overrides)))
    assert "pruning" in said
    assert sized_to_the_run(build_config(RECIPE, tiny_overrides(image_folder, tmp_path / "cache"))) == [
        "the cosine learning-rate schedule"
    ]


def test_train_resume_asking_for_more_epochs_names_the_command_that_gives_them(image_folder, tmp_path, capsys):
    """train --resume with another epoch count is refused as another configuration, which it is; the refusal did
    not say that `resume --epochs` continues the run for those epochs."""
    run = _train_one_epoch(image_folder, tmp_path)
    overrides = tiny_overrides(image_folder, tmp_path / "cache", epochs=2)
    capsys.readouterr()
    argv = ["train", "--recipe", RECIPE, "--set", *overrides, "--out", str(run), "--resume"]
    assert training_main(argv) == 2
    err = capsys.readouterr().err
    assert "train.epochs: 1 -> 2" in err and err.count("\n") == 1, err
    assert err.rstrip().endswith(f"to train it to 2 epochs: python -m training resume {run} --epochs 2")
    assert training_main(["resume", str(run), "--epochs", "2"]) == 0
    assert load_checkpoint(run / "last.pt")["epoch"] == 2


def test_a_finished_run_given_more_epochs_and_stopped_does_not_say_it_finished(image_folder, tmp_path, monkeypatch):
    """summary.json, which ablate, ensembles and people read as "this run has finished", stayed from the first
    finish while resume --epochs trained on: a stop then left a run under way saying it had finished."""
    run = _train_one_epoch(image_folder, tmp_path)
    assert json.loads((run / "summary.json").read_text())["epochs_run"] == 1
    real_end = Trainer._end_epoch

    def stopped_after_two(self, record):
        stop = real_end(self, record)
        if record["epoch"] == 2:
            raise KeyboardInterrupt
        return stop

    monkeypatch.setattr(Trainer, "_end_epoch", stopped_after_two)
    with pytest.raises(KeyboardInterrupt):
        resume(run, epochs=3)
    monkeypatch.setattr(Trainer, "_end_epoch", real_end)
    assert load_checkpoint(run / "last.pt")["epoch"] == 2 and not (run / "summary.json").exists()
    assert resume(run)["epochs_run"] == 3
    assert json.loads((run / "summary.json").read_text())["epochs_run"] == 3


def test_a_damaged_best_pt_beside_a_whole_last_pt_is_said_on_resume(image_folder, tmp_path, caplog):
    """The resume went on without a word, and a run that never beat its best again ended with an unreadable
    best.pt, which evaluate and export read."""
    run = _train_one_epoch(image_folder, tmp_path)
    (run / "best.pt").write_bytes(b"half a checkpoint")
    with caplog.at_level("WARNING"):
        resume(run, epochs=2)
    said = [r.getMessage() for r in caplog.records if "best.pt" in r.getMessage()]
    assert any(f"{run / 'best.pt'}" in m and "writes best.pt again at its next best epoch" in m for m in said), said


def test_a_hand_edited_config_yaml_is_read_as_recipes_are(tmp_path):
    """keep_edited_config read config.yaml with YAML 1.1's rules, where a recipe and --set read numbers as written:
    `epochs: 010` (ten, padded by hand) was read as octal eight and said to be an edit of the run's ten."""
    from training.config_recipes import build_config
    from training.config_yaml import save_config
    from training.resume import keep_edited_config

    started = build_config("resnet9_half_cpu", ["epochs=10"])
    save_config(started, tmp_path / "config.yaml")
    text = (tmp_path / "config.yaml").read_text()
    assert "  epochs: 10\n" in text
    (tmp_path / "config.yaml").write_text(text.replace("  epochs: 10\n", "  epochs: 010\n"))
    keep_edited_config(tmp_path, started)
    assert not (tmp_path / "config.edited.yaml").exists()
    (tmp_path / "config.yaml").write_text(text.replace("  epochs: 10\n", "  epochs: 1:30\n"))  # text: an edit
    keep_edited_config(tmp_path, started)
    assert (tmp_path / "config.edited.yaml").exists()

"""An ablation's folder holds one ablation: re-running it resumes it, and another ablation (other variations,
other --set), sent there by default or by --out, is refused rather than replacing its table without a word."""

from __future__ import annotations

import json
import shutil

import pytest

import training.reports.ablate as ablate_mod
from conftest import tiny_overrides
from training.__main__ import main

DEFAULT = "runs/ablate-resnet9_half_cpu"


@pytest.fixture
def variants_trained(tiny_run, monkeypatch) -> list[str]:
    """Each variant's training, in no time: the tiny run copied into its folder (less its config.yaml, so that
    the re-run takes it for the variant's own); the folders trained, in order."""
    trained: list[str] = []

    def as_the_tiny_run(run_dir, config):
        shutil.copytree(tiny_run, run_dir, dirs_exist_ok=True)
        (run_dir / "config.yaml").unlink()
        trained.append(run_dir.name)
        return "trained"

    monkeypatch.setattr(ablate_mod, "run_variant", as_the_tiny_run)
    return trained


def _argv(vary: str, sets: list[str], *extra: str) -> list[str]:
    key = vary.split("=")[0]
    kept = [s for s in sets if not s.startswith(f"{key}=")]
    return ["ablate", "--recipe", "resnet9_half_cpu", "--vary", vary, "--set", *kept, "--device", "cpu", *extra]


def test_an_ablation_of_other_variations_is_refused_where_another_ones_table_is(
    image_folder, tmp_path, monkeypatch, capsys, variants_trained
):
    monkeypatch.chdir(tmp_path)
    sets = tiny_overrides(image_folder, tmp_path / "cache")
    assert main(_argv("lr=0.05,0.1", sets)) == 0
    table = (tmp_path / DEFAULT / "ablation.md").read_text()
    record = (tmp_path / DEFAULT / "ablation.json").read_text()
    assert "lr = 0.05 / 0.1" in table
    capsys.readouterr()

    refusal = (
        f"error: {DEFAULT} holds another ablation (resnet9_half_cpu, varying lr = 0.05 / 0.1), whose table this one "
        "would replace: give this one its own folder with --out, or remove that one first\n"
    )
    for extra in ([], ["--out", DEFAULT]):  # the default folder, and the same folder named
        assert main(_argv("cutout=0,8", sets, *extra)) == 2
        assert capsys.readouterr().err == refusal
    # the same variants with another --set would replace it too
    assert main(_argv("lr=0.05,0.1", [*sets, "seed=1"])) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {DEFAULT} holds another ablation (the same variants with other --set (") and (
        err.count("\n") == 1
    ), err
    assert (tmp_path / DEFAULT / "ablation.md").read_text() == table
    assert (tmp_path / DEFAULT / "ablation.json").read_text() == record
    assert variants_trained == ["lr-0.05", "lr-0.1"]

    # the same ablation re-run (its --set in another order, evaluated anew) goes on in its folder, as documented
    assert main(_argv("lr=0.05,0.1", sets[::-1], "--target-top1", "10")) == 0
    assert json.loads((tmp_path / DEFAULT / "ablation.json").read_text())["target_top1"] == pytest.approx(0.1)
    # one that extends it (a value more of its key) goes on in its folder too: its table keeps every earlier row
    assert main(_argv("lr=0.05,0.1,0.2", sets)) == 0
    assert variants_trained[-1] == "lr-0.2"
    assert "lr = 0.05 / 0.1 / 0.2" in (tmp_path / DEFAULT / "ablation.md").read_text()
    # and the other ablation, given its own folder, is written there
    assert main(_argv("cutout=0,8", sets, "--out", "runs/cutout")) == 0
    assert "cutout = 0 / 8" in (tmp_path / "runs" / "cutout" / "ablation.md").read_text()
    assert (tmp_path / DEFAULT / "ablation.json").read_text() != record  # rewritten by the re-run alone
    assert "lr = 0.05 / 0.1" in (tmp_path / DEFAULT / "ablation.md").read_text()


def test_an_ablation_folder_whose_record_cannot_be_read_is_refused_naming_it(
    image_folder, tmp_path, monkeypatch, capsys, variants_trained
):
    monkeypatch.chdir(tmp_path)
    (tmp_path / DEFAULT).mkdir(parents=True)
    (tmp_path / DEFAULT / "ablation.json").write_text("{")
    assert main(_argv("lr=0.05,0.1", tiny_overrides(image_folder, tmp_path / "cache"))) == 2
    assert capsys.readouterr().err == (
        f"error: {DEFAULT}/ablation.json cannot be read (it is not valid JSON), so whether its folder holds this "
        "ablation cannot be told: use another --out or remove that folder\n"
    )
    assert variants_trained == []


def test_the_same_steps_with_their_settings_in_another_order_go_on_in_their_folder(
    image_folder, tmp_path, monkeypatch, capsys, variants_trained
):
    """A step's settings make one run whatever their order (a key given twice is refused): the same steps re-run
    with them reordered were refused as another ablation."""
    monkeypatch.chdir(tmp_path)
    sets = [s for s in tiny_overrides(image_folder, tmp_path / "cache") if not s.startswith(("lr=", "cutout="))]

    def argv(*step: str) -> list[str]:
        steps = ["--step", "base", "--step", "both", *step]
        return ["ablate", "--recipe", "resnet9_half_cpu", *steps, "--set", *sets, "--device", "cpu"]

    assert main(argv("lr=0.05", "cutout=8")) == 0
    capsys.readouterr()
    assert main(argv("cutout=8", "lr=0.05")) == 0, capsys.readouterr().err
    assert main(argv("cutout=8", "lr=0.1")) == 2  # other settings: another ablation
    assert "holds another ablation (resnet9_half_cpu, steps " in capsys.readouterr().err

"""What rederive, recover and the card table compute and record: the temperature a re-derived graph is given and
what it was measured against, the data and the graph rederive and recover read (from any folder, while another
command changes the models folder), what a recovered checkpoint keeps of its card, the card table's rows."""

from __future__ import annotations

import json
import shutil

import onnx
import pytest

from export.__main__ import main as export_main
from export.pipeline import export_checkpoint
from export.rederive import rederive
from inference.errors import UsageError
from inference.manifest import load_manifest
from training.checkpoint import load_checkpoint


def test_rederive_says_what_it_measured_against_and_when_its_temperature_means_little(tiny_run, tmp_path):
    """One validation image carries no calibration signal: export says so on the card, and a T fitted by rederive
    on the same image was recorded as if it were a measurement. Its summary named PyTorch, which it never ran."""
    models = tmp_path / "models"
    export_checkpoint(tiny_run / "best.pt", "raw", "fp32", models, cache_dir=None, calibrate="none", max_val_images=1)
    entry, parity = rederive("raw", "cal", "fp32", models, cache_dir=None, max_val_images=1)
    # measured against the FP32 graph, not the checkpoint, and said so
    assert "FP32 graph top-1" in parity.summary() and "PyTorch" not in parity.summary()
    assert "reference" not in entry.metrics["parity"]
    assert entry.calibration.method == "temperature"
    assert "means little" in entry.calibration.fitted_on and "the FP32 graph raw.onnx" in entry.calibration.fitted_on
    assert load_manifest(models).get("cal").calibration == entry.calibration


def test_rederive_and_recover_read_the_manifests_relative_data_root_from_the_project_from_any_folder(
    tiny_models_dir, image_folder, tmp_path, monkeypatch, capsys
):
    """The shipped manifest records its data relative to the project (`../shared/...`): `export verify` reads it
    from there from any folder, and rederive and recover, run from another folder, asked for --data instead."""
    project = tmp_path / "project"
    models = project / "models"
    shutil.copytree(tiny_models_dir, models)
    shutil.copytree(image_folder, project / "data")
    raw = json.loads((models / "manifest.json").read_text())
    for card in raw["models"]:
        card["source"]["data_root"] = "data"
    (models / "manifest.json").write_text(json.dumps(raw))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    argv = ["--models-dir", str(models), "--cache-dir", ""]
    out = tmp_path / "recovered.pt"
    assert export_main(["recover", "tiny", "--out", str(out), *argv]) == 0, capsys.readouterr().err
    recovered = load_checkpoint(out)["meta"]["data_root"]
    assert (elsewhere / recovered).resolve() == (project / "data").resolve()  # read as later commands read it
    derive = ["rederive", "tiny", "--name", "tiny-fp16", "--precision", "fp16", "--calibrate", "none", *argv]
    assert export_main(derive) == 0, capsys.readouterr().err
    assert load_manifest(models).get("tiny-fp16").source["data_root"] == "data"  # the card's, as the reference's


def test_card_table_names_the_image_size_the_graph_takes(tiny_models_dir, tmp_path, capsys):
    """A model trained at another image size is served at that size: the table said nothing of it."""
    copy = tmp_path / "models"
    shutil.copytree(tiny_models_dir, copy)
    raw = json.loads((copy / "manifest.json").read_text())
    (card,) = [e for e in raw["models"] if e["name"] == "tiny"]
    card["input"]["shape"] = [3, 24, 24]  # as a run trained with data.image_size=24 records it
    (copy / "manifest.json").write_text(json.dumps(raw))
    assert export_main(["card", "tiny", "tiny-int8", "--models-dir", str(copy)]) == 0
    rows = {line.split(" | ")[0].lstrip("| "): line.split(" | ")[1:] for line in capsys.readouterr().out.splitlines()}
    assert [cell.rstrip(" |") for cell in rows["input (pixels)"]] == ["24x24 RGB", "32x32 RGB"]


@pytest.mark.parametrize("change", ["replaced", "removed"])
def test_rederive_refuses_a_reference_replaced_while_it_read_the_validation_images(
    tiny_models_dir, tmp_path, monkeypatch, change
):
    """Another command may re-export the reference while rederive decodes the dataset (minutes on the real one):
    the derived graph was then made from the new file while its card named the old one's sha256."""
    import export.rederive as module

    models = tmp_path / "models"
    shutil.copytree(tiny_models_dir, models)
    reference = models / "tiny.onnx"
    read_split = module.validation_split

    def split_then_replace(*args, **kwargs):
        val = read_split(*args, **kwargs)
        if change == "removed":
            reference.unlink()
        else:
            proto = onnx.load(str(reference))
            proto.producer_version = "another export"
            onnx.save(proto, str(reference))
        return val

    monkeypatch.setattr(module, "validation_split", split_then_replace)
    with pytest.raises(UsageError, match="tiny.onnx was replaced or removed by another command"):
        rederive("tiny", "tiny-fp16", "fp16", models, calibrate="none", cache_dir=None)
    assert "tiny-fp16" not in {m.name for m in load_manifest(models, verify=False).models}
    assert sorted(p.name for p in models.iterdir() if p.is_dir()) == []  # no working folder left behind


def test_a_recovered_checkpoint_keeps_what_the_card_records_of_its_training(tiny_models_dir):
    """A distilled model's card names its teacher, which a re-export of the recovered checkpoint wrote on its card
    no more."""
    from export.recover import recovered_meta

    entry = load_manifest(tiny_models_dir, verify=False).get("tiny")
    teacher = {"checkpoint": "runs/teacher/best.pt", "sha256": "ab" * 32}
    entry = entry.model_copy(update={"source": {**entry.source, "teacher": teacher}})
    meta = recovered_meta(entry)
    assert meta["teacher"] == teacher and "members" not in meta
    assert (meta["classes"], meta["input_size"], meta["fit"]) == (entry.classes, 32, entry.source["fit"])


def test_recover_compares_the_network_with_the_graph_it_read_its_weights_from(tiny_models_dir, tmp_path, monkeypatch):
    """Another command may replace or remove the listed graph while recover reads the validation images: the rebuilt
    network was then compared with that other file, and a good recovery failed."""
    import export.recover as module

    models = tmp_path / "models"
    shutil.copytree(tiny_models_dir, models)
    read_split = module.validation_split

    def split_then_remove(*args, **kwargs):
        val = read_split(*args, **kwargs)
        (models / "tiny.onnx").unlink()
        return val

    monkeypatch.setattr(module, "validation_split", split_then_remove)
    listed = load_manifest(models, verify=False).get("tiny").sha256
    out = tmp_path / "recovered.pt"
    _, parity = module.recover_checkpoint("tiny", out, models, cache_dir=None)
    assert parity.passed and load_checkpoint(out)["meta"]["recovered_from"]["sha256"] == listed


def test_an_export_removes_the_work_folders_killed_exports_left_and_no_others(tiny_run, tmp_path, caplog):
    """SIGKILL leaves an export's work folder in the models folder (no handler runs): the next export removes it,
    named in a warning, and leaves those of a process still running or of another host sharing the folder."""
    import socket
    import subprocess
    import sys

    from export.workspace import PREFIX

    models = tmp_path / "models"
    models.mkdir()
    ended = subprocess.Popen([sys.executable, "-c", "pass"])
    ended.wait()
    running = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    host = socket.gethostname()
    killed = models / f"{PREFIX}{ended.pid}@{host}-k1ll3d"
    alive = models / f"{PREFIX}{running.pid}@{host}-busy_1"
    other_host = models / f"{PREFIX}{ended.pid}@{host}x-elsewhere"
    for folder in (killed, alive, other_host):
        folder.mkdir()
        (folder / "fp32.onnx").write_bytes(b"half a graph")
    try:
        with caplog.at_level("WARNING"):
            export_checkpoint(
                tiny_run / "best.pt", "raw", "fp32", models, cache_dir=None, calibrate="none", max_val_images=4
            )
    finally:
        running.kill()
        running.wait()
    assert not killed.exists() and str(killed) in caplog.text and "killed" in caplog.text
    assert alive.exists() and other_host.exists()
    # the export's own work folder is gone too, and nothing but the three above and its results are left
    assert sorted(p.name for p in models.iterdir() if p.name.startswith(PREFIX)) == sorted(
        [alive.name, other_host.name]
    )
    assert (models / "raw.onnx").exists()

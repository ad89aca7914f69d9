"""``python -m service doctor --model NAME``: a model file it leaves out is still one the service refuses over."""

from __future__ import annotations

import shutil

from conftest import ROOT


def test_a_bad_file_of_a_model_left_out_by_model_fails_the_check(tmp_path):
    """The service refuses to start when any listed file is missing or altered; ``--model`` said "(below)" of
    such a file, named it nowhere, and passed ("will work on this host", exit 0)."""
    from inference.manifest import load_manifest
    from service import doctor
    from service.gpus import GpuReport
    from service.settings import ServiceSettings

    shipped = ROOT / "models"
    manifest = load_manifest(shipped, verify=False)
    cpu_default = manifest.default_for("cpu").name
    others = [m for m in manifest.models if m.name != cpu_default]
    altered, missing = others[0], others[1]
    models = tmp_path / "models"
    models.mkdir()
    shutil.copy(shipped / "manifest.json", models / "manifest.json")
    for entry in manifest.models:
        if entry.name == altered.name:
            shutil.copy(shipped / entry.file, models / entry.file)
            with open(models / entry.file, "ab") as file:
                file.write(b"x")
        elif entry.name != missing.name:
            (models / entry.file).symlink_to(shipped / entry.file)

    settings = ServiceSettings(models_dir=models, device="cpu")
    report = doctor.diagnose(
        "cpu", models, speed=False, gpus=GpuReport([], None), settings=settings, only=[cpu_default]
    )
    text = report.render()
    assert not report.passed, text
    failed = {f.topic for f in report.failures}
    assert failed == {f"model {altered.name}", f"model {missing.name}"}, text
    assert "will NOT work on this host" in text, text

"""``python -m service doctor --folder DIR``: how the report speaks of the labelled folder's sub-folders."""

from __future__ import annotations

from pathlib import Path

from PIL import Image

from conftest import ROOT


def test_sub_folders_named_after_no_class_are_listed_once_whatever_the_models_fits(tmp_path, monkeypatch):
    """The shipped models share their classes but not their fit (squash, center_crop): the folder is read once
    per fit, and its sub-folders were listed, and the ones named after no class warned about, once per reading."""
    from inference.manifest import load_manifest
    from service import doctor
    from service.gpus import GpuReport
    from service.settings import ServiceSettings

    models = ROOT / "models"
    shipped = load_manifest(models, verify=False).models
    fits = {(tuple(m.classes), m.input.size): set() for m in shipped}
    for m in shipped:
        fits[tuple(m.classes), m.input.size].add(m.input.fit)
    assert any(len(f) > 1 for f in fits.values()), "no two shipped models read the folder alike but for the fit"

    folder = tmp_path / "labelled"
    for name in ("cat", "dog", "not-a-class", "Trucks"):
        (folder / name).mkdir(parents=True)
        Image.new("RGB", (40, 30), (90, 120, 30)).save(folder / name / "0.png")
    listed: list[Path] = []
    real = doctor.class_folders

    def class_folders(where, entry):
        listed.append(where)
        return real(where, entry)

    monkeypatch.setattr(doctor, "class_folders", class_folders)
    settings = ServiceSettings(models_dir=models, device="cpu")
    report = doctor.diagnose("cpu", models, str(folder), 100, speed=False, gpus=GpuReport([], None), settings=settings)
    text = report.render()
    assert report.passed, text
    assert text.count("'not-a-class'") == 1 and text.count("'Trucks'") == 1, text
    warned = [f.text for f in report.findings if f.topic == "folder" and f.status == "warn"]
    assert len(warned) == 1 and "'Trucks' (did you mean truck?), 'not-a-class'" in warned[0], warned
    readings = [f.text for f in report.findings if f.topic == "folder" and f.status == "info"]
    assert len(readings) == sum(len(f) for f in fits.values()), readings  # one per fit: their figures differ
    assert all("2 labelled images" in line for line in readings), readings
    assert len(listed) == len(fits), listed  # the sub-folders listed once per set of classes


def test_model_checks_only_the_named_models_and_refuses_names_it_does_not_list(capsys):
    """Every model was timed at batch 1 and 256 (minutes for the shipped ones on a busy host) when one was in
    question; ``--model`` checks the named ones, and a name the manifest lacks is a usage error naming those it
    lists, before the host's checks."""
    import argparse

    from inference.manifest import load_manifest
    from service import doctor
    from service.gpus import GpuReport
    from service.settings import ServiceSettings

    models = ROOT / "models"
    manifest = load_manifest(models, verify=False)
    cpu_default = manifest.default_for("cpu").name
    other = next(m.name for m in manifest.models if m.name != cpu_default)
    settings = ServiceSettings(models_dir=models, device="cpu")

    def checked(only):
        report = doctor.diagnose("cpu", models, speed=False, gpus=GpuReport([], None), settings=settings, only=only)
        assert report.passed, report.render()
        return report, {f.topic.removeprefix("model ") for f in report.findings if f.topic.startswith("model ")}

    report, names = checked([other, other])
    assert names == {other}
    here = [f.text for f in report.findings if f.topic == "default here"]
    assert here == [f"not judged: {cpu_default} was not checked (--model)"], here
    report, names = checked([cpu_default, other])
    assert names == {cpu_default, other}
    here = [f.text for f in report.findings if f.topic == "default here"]
    assert len(here) == 1 and here[0].startswith(cpu_default), here

    parser = argparse.ArgumentParser()
    doctor.add_doctor_parser(parser.add_subparsers())
    for wrong, said in (("nope", f"unknown model 'nope'; available: {manifest.models[0].name}"), ("", "--model ''")):
        args = parser.parse_args(["doctor", "--device", "cpu", "--models-dir", str(models), "--model", wrong])
        assert args.fn(args) == 2
        err = capsys.readouterr().err
        assert said in err and "Traceback" not in err and "checking the host" not in err, err


def test_an_empty_models_dir_or_folder_is_refused_not_taken_for_the_default(capsys):
    """An unset shell variable (`--folder "$DIR"`) checked the default models folder, or generated images instead
    of the labelled folder, without a word; `serve` refuses an empty value."""
    from service.__main__ import main as service_main

    for flag in ("--models-dir", "--folder"):
        assert service_main(["doctor", "--device", "cpu", "--no-speed", flag, ""]) == 2
        err = capsys.readouterr().err
        assert err == f"error: {flag} is empty: give a value, or leave the flag out for its default\n", err

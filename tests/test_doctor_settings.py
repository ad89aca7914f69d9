"""``python -m service doctor``'s words for the settings it was given and for the folder it measured."""

from __future__ import annotations

from PIL import Image

from conftest import ROOT


def test_doctor_names_the_flag_a_refused_value_came_from_as_serve_does(monkeypatch, capsys):
    """A refused --models-dir or --device was named by the variable the flag overrides (CIFAR_MODELS_DIR, which
    the user never set); serve names what was typed. Neither flag's values are refused past argparse today, so the
    refusal is the settings' own check, made to refuse the value wherever it came from."""
    from service import doctor
    from service.__main__ import get_args_parser
    from service.settings import SETTINGS, ServiceSettings, SettingsError

    refused = {}

    def checked(environ):
        name = refused["name"]
        raise SettingsError(name, f"cannot be used: {environ[SETTINGS[name].env]!r}")

    monkeypatch.setattr(ServiceSettings, "checked", staticmethod(checked))
    for name, flag, value in (("models_dir", "--models-dir", "/nowhere"), ("device", "--device", "cpu")):
        refused["name"] = name
        args = get_args_parser().parse_args(["doctor", "--no-speed", flag, value])
        monkeypatch.delenv(SETTINGS[name].env, raising=False)
        assert doctor.main(args) == 2
        assert capsys.readouterr().err == f"error: {flag} cannot be used: {value!r}\n"
        # From the variable, with the flag left out, the variable is what the user set: it is named.
        monkeypatch.setenv(SETTINGS[name].env, value)
        args = get_args_parser().parse_args(["doctor", "--no-speed"])
        assert doctor.main(args) == 2
        assert capsys.readouterr().err == f"error: {SETTINGS[name].env} cannot be used: {value!r}\n"


def test_the_accuracy_on_one_labelled_image_is_said_in_the_singular(tmp_path):
    """A folder with one labelled image was "accuracy 0.00% on 1 images"."""
    from inference.manifest import load_manifest
    from service import doctor
    from service.gpus import GpuReport
    from service.settings import ServiceSettings

    models = ROOT / "models"
    manifest = load_manifest(models, verify=False)
    entry = manifest.get(manifest.default_for("cpu").name)
    folder = tmp_path / "labelled"
    (folder / entry.classes[0]).mkdir(parents=True)
    Image.new("RGB", (32, 32), (90, 120, 30)).save(folder / entry.classes[0] / "0.png")
    settings = ServiceSettings(models_dir=models, device="cpu")
    report = doctor.diagnose(
        "cpu", models, str(folder), 10, speed=False, gpus=GpuReport([], None), settings=settings, only=[entry.name]
    )
    (said,) = [f.text for f in report.findings if f.topic == f"model {entry.name}" and "accuracy" in f.text]
    assert " on 1 image (recorded on validation: " in said, said

"""``python -m service doctor --folder DIR``: a folder with no sub-folder named after a class of a model checked
is a usage error, refused before the host is checked and every model file hashed (minutes with large models),
as a missing folder or an archive is."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from conftest import ROOT


def _default_entry():
    from inference.manifest import load_manifest

    manifest = load_manifest(ROOT / "models", verify=False)
    return manifest.get(manifest.default_for("cpu").name)


def test_doctor_refuses_a_folder_without_class_folders_before_the_host_and_the_sha256(tmp_path, monkeypatch, capsys):
    from service import doctor
    from service.__main__ import get_args_parser

    entry = _default_entry()
    inner = Path("photos", "cifar10", "train")
    for name in entry.classes[:2]:
        (tmp_path / inner / name).mkdir(parents=True)
        Image.new("RGB", (32, 32), (90, 120, 30)).save(tmp_path / inner / name / "0.png")
    monkeypatch.chdir(tmp_path)
    args = get_args_parser().parse_args(
        ["doctor", "--no-speed", "--device", "cpu", "--models-dir", str(ROOT / "models"), "--folder", "photos"]
    )
    assert doctor.main(args) == 2
    captured = capsys.readouterr()
    said = captured.err.splitlines()
    assert not [line for line in said if line.startswith(("checking the host", "checking the sha256"))], said
    assert said == [
        f"error: --folder photos has no sub-folder named after a class ({', '.join(entry.classes)}); the class "
        f"folders are in {inner}: give --folder {inner}"
    ]
    assert captured.out == ""


def test_diagnose_refuses_such_a_folder_without_checking_the_host_or_hashing_a_file(tmp_path, monkeypatch):
    from inference.manifest import ManifestError
    from service import doctor

    def never(*args, **kwargs):
        raise AssertionError("checked before the folder was refused")

    monkeypatch.setattr(doctor, "check_host", never)
    monkeypatch.setattr(doctor, "file_problems", never)
    steps: list[str] = []
    entry = _default_entry()
    (tmp_path / "notes").mkdir()  # a sub-folder, named after no class
    with pytest.raises(ManifestError) as refused:
        doctor.diagnose("cpu", ROOT / "models", str(tmp_path), say=steps.append, only=[entry.name])
    assert str(refused.value) == (
        f"--folder {tmp_path} has no sub-folder named after a class ({', '.join(entry.classes)})"
    )
    assert steps == []

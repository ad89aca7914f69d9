"""The doctor's folder to give where --folder holds the class folders a level or two down: a link back up the
tree (data/all -> data, as some dataset scripts make) does not name the same class folders twice."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from PIL import Image

from conftest import ROOT


def test_a_link_back_up_does_not_name_the_class_folders_twice(tmp_path):
    from inference.manifest import ManifestError, load_manifest
    from service.doctor_folder import read_folder

    manifest = load_manifest(ROOT / "models", verify=False)
    entry = manifest.get(manifest.default_for("cpu").name)
    data = tmp_path / "data"
    (data / "train" / entry.classes[0]).mkdir(parents=True)
    Image.new("RGB", (32, 32)).save(data / "train" / entry.classes[0] / "0.png")
    os.symlink(data, data / "all")
    os.symlink(data / "loop", data / "loop")  # a link to itself: no folder at all
    with pytest.raises(ManifestError) as refused:
        read_folder(data, entry, 10)
    inner = Path(data, "train")
    assert str(refused.value).endswith(f"; the class folders are in {inner}: give --folder {inner}")

"""A model file that is not the one its manifest recorded: the refusal says what to do, not only what is wrong."""

from __future__ import annotations

import shutil

import pytest

from conftest import ROOT
from inference.manifest import ManifestError, load_manifest, verify_file


def test_a_tampered_file_is_refused_with_the_ways_to_mend_it(tmp_path):
    manifest = load_manifest(ROOT / "models")
    entry = min(manifest.models, key=lambda m: (ROOT / "models" / m.file).stat().st_size)
    copy = tmp_path / entry.file
    shutil.copyfile(ROOT / "models" / entry.file, copy)
    data = bytearray(copy.read_bytes())
    data[len(data) // 2] ^= 0xFF
    copy.write_bytes(bytes(data))
    with pytest.raises(ManifestError) as refused:
        verify_file(entry, tmp_path)
    message = str(refused.value)
    assert "does not match the manifest" in message and "\n" not in message, message
    assert "--replace" in message and f"python -m export remove {entry.name}" in message, message

"""A model file that is not the one its manifest recorded: the refusal says what to do, not only what is wrong."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from conftest import ROOT
from inference.errors import UsageError
from inference.manifest import (
    Manifest,
    ManifestError,
    ModelEntry,
    load_manifest,
    remove_models,
    set_default,
    sha256_file,
    verify_file,
)


def _tampered_refusal(models_dir: Path) -> tuple[ModelEntry, str]:
    """The smallest listed model's file, altered, in ``models_dir``, and verify_file's refusal of it."""
    manifest = load_manifest(ROOT / "models")
    entry = min(manifest.models, key=lambda m: (ROOT / "models" / m.file).stat().st_size)
    models_dir.mkdir(exist_ok=True)
    copy = models_dir / entry.file
    shutil.copyfile(ROOT / "models" / entry.file, copy)
    data = bytearray(copy.read_bytes())
    data[len(data) // 2] ^= 0xFF
    copy.write_bytes(bytes(data))
    with pytest.raises(ManifestError) as refused:
        verify_file(entry, models_dir)
    return entry, str(refused.value)


def test_a_tampered_file_is_refused_with_the_ways_to_mend_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # export's default folder, ./models: the commands need no --models-dir
    entry, message = _tampered_refusal(Path("models"))
    assert "does not match the manifest" in message and "\n" not in message, message
    assert "--replace," in message and message.endswith(f"(python -m export remove {entry.name})"), message


def test_the_ways_to_mend_it_name_a_models_folder_other_than_export_s_default(tmp_path, monkeypatch):
    # without it, `export remove NAME` would drop a model of that name from ./models, not the broken one
    monkeypatch.chdir(tmp_path)
    entry, message = _tampered_refusal(tmp_path / "served models")
    flag = f"--models-dir '{tmp_path / 'served models'}'"
    assert f"--replace {flag}," in message and f"python -m export remove {entry.name} {flag})" in message, message
    assert "\n" not in message, message


def test_a_models_folder_named_like_an_option_is_named_so_the_command_reads_it_as_a_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # `--models-dir -served` would read -served as an option, and the command fail
    entry, message = _tampered_refusal(Path("-served"))
    assert f"python -m export remove {entry.name} --models-dir ./-served)" in message, message


def _tampered_default(models_dir: Path, only: bool) -> tuple[str, str]:
    """The default model's file, altered, in ``models_dir`` (alone in its manifest with ``only``), and the refusal
    a full load of that manifest gives."""
    manifest = load_manifest(ROOT / "models", verify=False)
    name = manifest.default
    entry = manifest.get(name)
    kept = [entry] if only else [entry, min(manifest.models, key=lambda m: (ROOT / "models" / m.file).stat().st_size)]
    models_dir.mkdir()
    for model in kept:
        shutil.copyfile(ROOT / "models" / model.file, models_dir / model.file)
    data = bytearray((models_dir / entry.file).read_bytes())
    data[len(data) // 2] ^= 0xFF
    (models_dir / entry.file).write_bytes(bytes(data))
    copy = Manifest(default=name, models=kept)
    (models_dir / "manifest.json").write_text(copy.model_dump_json())
    with pytest.raises(ManifestError) as refused:
        load_manifest(models_dir)
    return name, str(refused.value)


def test_a_tampered_default_is_not_advised_a_removal_that_export_remove_refuses(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    name, message = _tampered_default(Path("models"), only=False)
    assert "does not match the manifest" in message and "\n" not in message, message
    assert message.endswith(
        "or drop it once another model is the default (python -m export default OTHER, "
        f"then python -m export remove {name})"
    ), message
    with pytest.raises(UsageError, match="is a default model"):  # the removal the old advice gave, as it is met
        remove_models("models", [name])


def test_the_only_model_tampered_is_advised_no_removal_at_all(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    name, message = _tampered_default(Path("models"), only=True)
    assert "remove" not in message, message
    assert message.endswith("put the file as exported back, or export it again with --replace"), message


def _cuda_default_tampered(models_dir: Path) -> tuple[str, str]:
    """Two listed models, the second the default on cuda hosts only and its file not the recorded one: its name
    and the other's."""
    shipped = load_manifest(ROOT / "models", verify=False).models[:2]
    models_dir.mkdir()
    entries = []
    for i, entry in enumerate(shipped):
        (models_dir / entry.file).write_bytes(f"model {i}".encode())
        entries.append(entry.model_copy(update={"sha256": sha256_file(models_dir / entry.file)}))
    (models_dir / entries[1].file).write_bytes(b"altered")  # after its sha256 was recorded
    manifest = Manifest(default=entries[0].name, defaults={"cuda": entries[1].name}, models=entries)
    (models_dir / "manifest.json").write_text(manifest.model_dump_json())
    return entries[1].name, entries[0].name


def test_a_tampered_cuda_only_default_is_advised_the_default_command_that_frees_it(tmp_path, monkeypatch):
    """`export default OTHER [--for cpu|cuda]` let its reader pick --for cpu, after which the removal is refused
    again: the model is the default on cuda hosts, and only --for cuda (or no --for) takes that from it."""
    monkeypatch.chdir(tmp_path)
    name, other = _cuda_default_tampered(Path("models"))
    with pytest.raises(ManifestError) as refused:
        load_manifest("models")
    assert str(refused.value).endswith(
        f"or drop it once another model is the default (python -m export default OTHER --for cuda, then "
        f"python -m export remove {name})"
    ), refused.value
    set_default("models", other, ["cpu"])  # what the bracketed advice allowed: no use
    with pytest.raises(UsageError) as still:
        remove_models("models", [name])
    assert str(still.value).endswith("(python -m export default OTHER --for cuda)"), still.value
    set_default("models", other, ["cuda"])  # as advised
    assert [m.name for m in remove_models("models", [name]).models] == [other]


def test_the_plain_defaults_removal_is_advised_a_plain_default_command(tmp_path, monkeypatch):
    """--for cuda leaves the plain default what it was: the advice names no --for for it."""
    monkeypatch.chdir(tmp_path)
    name, other = _cuda_default_tampered(Path("models"))
    with pytest.raises(UsageError) as refused:
        remove_models("models", [other])
    assert str(refused.value).endswith("make another one the default first (python -m export default OTHER)")

"""Review r1 of the tampered-default advice and the one-line YAML refusals: the `export default` command advised
for a model that is a default on one kind of device only, and a YAML problem yaml splits over its context."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import ROOT
from inference.errors import UsageError
from inference.manifest import (
    Manifest,
    ManifestError,
    load_manifest,
    remove_models,
    set_default,
    sha256_file,
)
from training.config import ConfigError
from training.ensemble_recipe import started_run


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


def test_a_record_holding_two_yaml_documents_is_said_whole(tmp_path):
    """yaml says it as "expected a single document in the stream" then "but found another document": the second
    half alone was the refusal's reason."""
    (tmp_path / "ensemble.yaml").write_text("recipe: {name: r}\noverrides: []\n---\nrecipe: {name: r}\n")
    with pytest.raises(ConfigError) as refused:
        started_run(tmp_path)
    assert "(not YAML: expected a single document in the stream, but found another document at line 3)" in str(
        refused.value
    ), refused.value

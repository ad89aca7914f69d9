"""`python -m export` as a user meets it: a hand-edited manifest, a read-only one, the checkpoint of a run that has
not finished, a listed name of another dataset's model."""

from __future__ import annotations

import json
import logging
import shutil
import stat

import pytest

import export.pipeline
import export.verify
from export.__main__ import main as export_main
from export.pipeline import export_checkpoint
from export.record import check_replacement
from inference.errors import UsageError


@pytest.fixture(scope="module")
def models(tiny_run, tmp_path_factory):
    folder = tmp_path_factory.mktemp("models")
    export_checkpoint(tiny_run / "best.pt", "tiny", "fp32", folder, cache_dir=None)
    return folder


def _never(*args, **kwargs):
    raise AssertionError("the validation split was read")


@pytest.mark.parametrize(
    "field, edit",
    [
        ("classes", lambda e: e.update(classes=["cat", "dog", "ship"])),
        ("precision", lambda e: e.update(precision="int8")),
        ("input", lambda e: e["input"].update(fit="pad")),
        ("calibration", lambda e: e["calibration"].update(temperature=1.0)),
    ],
)
def test_verify_refuses_an_entry_that_says_otherwise_than_its_files_card(
    models, tmp_path, monkeypatch, capsys, field, edit
):
    """The sha256 covers the file, not its manifest entry: an entry edited by hand passed verification (precision,
    input, temperature: the service then refuses to start on it), or its classes were blamed on the dataset."""
    copy = tmp_path / "models"
    shutil.copytree(models, copy)
    raw = json.loads((copy / "manifest.json").read_text())
    edit(raw["models"][0])
    (copy / "manifest.json").write_text(json.dumps(raw))
    monkeypatch.setattr(export.verify, "validation_split", _never)
    assert export_main(["verify", "tiny", "--models-dir", str(copy), "--cache-dir", ""]) == 2
    err = capsys.readouterr().err
    assert f"differs from the card inside tiny.onnx in its {field}" in err, err
    assert "not the dataset it was trained on" not in err and "Traceback" not in err


def test_verify_of_an_entry_as_exported_still_passes(models, capsys):
    assert export_main(["verify", "tiny", "--models-dir", str(models), "--cache-dir", ""]) == 0, capsys.readouterr()


def test_a_read_only_manifest_is_refused_before_any_work_and_left_as_it_was(models, tiny_run, tmp_path, monkeypatch):
    """`chmod a-w manifest.json` keeps the models listed as they are: the atomic rename replaced it all the same,
    and left it writable."""
    copy = tmp_path / "models"
    shutil.copytree(models, copy)
    manifest = copy / "manifest.json"
    before = manifest.read_bytes()
    manifest.chmod(0o444)
    monkeypatch.setattr(export.pipeline, "validation_split", _never)
    argv = ["--checkpoint", str(tiny_run / "best.pt"), "--name", "other", "--models-dir", str(copy)]
    with pytest.raises(UsageError, match="manifest.json is read-only.*chmod u\\+w"):
        export.pipeline.export_checkpoint(tiny_run / "best.pt", "other", "fp32", copy, cache_dir=None)
    assert export_main([*argv, "--cache-dir", ""]) == 2
    assert manifest.read_bytes() == before and not manifest.stat().st_mode & stat.S_IWUSR
    assert sorted(p.name for p in copy.iterdir()) == ["manifest.json", "tiny.onnx"]


class _Stop(Exception):
    pass


def _export_until_the_manifest_is_read(monkeypatch, caplog, checkpoint, tmp_path) -> list[str]:
    def stop(*args, **kwargs):
        raise _Stop

    monkeypatch.setattr(export.pipeline, "check_replacement", stop)
    with caplog.at_level(logging.WARNING, logger="export"), pytest.raises(_Stop):
        export_checkpoint(checkpoint, "x", "fp32", tmp_path / "models", cache_dir=None)
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


def test_the_checkpoint_of_a_run_that_has_not_finished_is_said_to_be_so(tiny_run, tmp_path, monkeypatch, caplog):
    """An interrupted run's best.pt (its first epochs of many) was exported and shipped without a word."""
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    (run / "summary.json").unlink()  # what a run stopped before its last epoch lacks
    warnings = _export_until_the_manifest_is_read(monkeypatch, caplog, run / "best.pt", tmp_path)
    trained = len(json.loads((run / "history.json").read_text()))
    assert any(
        "has not finished" in w and f"{trained} of its 3 epochs" in w and f"python -m training resume {run}" in w
        for w in warnings
    ), warnings


def test_the_checkpoint_of_a_finished_run_is_exported_without_that_warning(tiny_run, tmp_path, monkeypatch, caplog):
    warnings = _export_until_the_manifest_is_read(monkeypatch, caplog, tiny_run, tmp_path)
    assert not any("has not finished" in w for w in warnings), warnings


def test_a_listed_name_of_as_many_other_classes_is_refused_naming_them_other_and_the_way_out(models):
    """A folder of one's own with three classes under the name of the listed three-class model: the refusal said
    'of 3 classes; this ... of 3 classes would replace it', and sent the user to edit manifest.json by hand."""
    with pytest.raises(UsageError) as refusal:
        check_replacement(models, "tiny", "resnet9", ["cat", "dog", "ship"], "fp32", replace=True)
    message = str(refusal.value)
    assert "of 3 other classes" in message and "python -m export remove tiny" in message, message


@pytest.mark.parametrize("command", [["default", "tiny", "--for", "cpu"], ["remove", "spare"]])
def test_a_read_only_manifest_is_refused_by_every_command_that_changes_it(models, tmp_path, capsys, command):
    """`export default` and `export remove` save the manifest too: the same rename replaced a read-only one."""
    copy = tmp_path / "models"
    shutil.copytree(models, copy)
    manifest = copy / "manifest.json"
    raw = json.loads(manifest.read_text())  # a second model, not the default, for remove to take
    raw["models"].append({**raw["models"][0], "name": "spare", "file": "spare.onnx"})
    manifest.write_text(json.dumps(raw))
    shutil.copy(copy / "tiny.onnx", copy / "spare.onnx")
    before = manifest.read_bytes()
    manifest.chmod(0o444)
    assert export_main([*command, "--models-dir", str(copy)]) == 2
    err = capsys.readouterr().err
    assert "manifest.json is read-only" in err and "Traceback" not in err, err
    assert manifest.read_bytes() == before and (copy / "tiny.onnx").is_file()


def test_a_manifest_saved_again_keeps_its_mode(models, tmp_path, capsys):
    """A shared models folder's group-writable manifest stays so: the atomic rename put a new file of the
    umask's mode (644) in its place."""
    copy = tmp_path / "models"
    shutil.copytree(models, copy)
    manifest = copy / "manifest.json"
    manifest.chmod(0o664)
    assert export_main(["default", "tiny", "--for", "cpu", "--models-dir", str(copy)]) == 0, capsys.readouterr()
    assert stat.S_IMODE(manifest.stat().st_mode) == 0o664


def test_a_file_written_again_keeps_only_its_owners_permission_bits(tmp_path):
    """write_atomic keeps the replaced file's read and write bits, not its setuid bits, and not those of a file
    another user owned (the new file is this user's: 640 would lock its old owner out)."""
    import os

    from inference.files import write_text_atomic

    ours = tmp_path / "ours.json"
    ours.write_text("{}")
    ours.chmod(0o6775)
    write_text_atomic(ours, "{}\n")
    assert stat.S_IMODE(ours.stat().st_mode) == 0o775
    if os.geteuid() == 0:  # only root can give a file away
        theirs = tmp_path / "theirs.json"
        theirs.write_text("{}")
        theirs.chmod(0o600)
        os.chown(theirs, 65534, 65534)
        previous = os.umask(0o022)
        try:
            write_text_atomic(theirs, "{}\n")
        finally:
            os.umask(previous)
        assert stat.S_IMODE(theirs.stat().st_mode) == 0o644


_WITHOUT_TORCH = (
    "import runpy, sys\n"
    "sys.modules['torch'] = None  # as on the serving install (scripts/setup.sh serve)\n"
    "sys.argv = ['export', *sys.argv[1:]]\n"
    "runpy.run_module('export', run_name='__main__')\n"
)


@pytest.mark.parametrize("command", [["--help"], ["verify", "--help"], ["rederive", "--help"], ["recover", "--help"]])
def test_the_conversion_commands_help_is_read_without_torch(command):
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", _WITHOUT_TORCH, *command], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.startswith("usage: ") and done.stderr == ""


def test_a_conversion_command_without_torch_is_one_line_naming_the_install_that_runs_it(tmp_path):
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-c", _WITHOUT_TORCH, "verify", "any-model", "--models-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr.startswith("error: verify needs torch, which this install lacks (")
    assert done.stderr.endswith(
        "): the serving install runs list, default, remove and card; the full one (bash scripts/setup.sh) runs the "
        "rest\n"
    )
    assert done.stderr.count("\n") == 1


def test_a_mistake_in_exports_own_imports_keeps_its_traceback(tmp_path):
    """Only a package this install lacks is said in one line: a module of export's own that does not import was
    said as "needs torch and onnx, which this install lacks", sending the user to reinstall."""
    import subprocess
    import sys

    program = (
        "import runpy, sys\nsys.modules['export.pipeline'] = None\n"
        "sys.argv = ['export', *sys.argv[1:]]\nrunpy.run_module('export', run_name='__main__')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", program, "verify", "x", "--models-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1 and "Traceback (most recent call last)" in done.stderr, done.stderr
    assert "which this install lacks" not in done.stderr

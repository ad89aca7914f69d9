"""The batch scorer's stop handling and its lines around it: ``interrupts_held`` calls back as each stop is held
(the --url engine abandons its requests in flight by it); a --url run stopped by Ctrl-C says that it waits for
its requests in flight, and how to abandon them, before its summary; an archive given as DIR is to be unpacked;
a warning the shared code logs (onnxruntime.preload_dlls() failing) is said as the scorer's other warnings."""

from __future__ import annotations

import os
import signal
import tarfile
import threading
import zipfile

import pytest
from PIL import Image

from conftest import ROOT
from fakes import base_url
from inference import runtime
from inference.interrupts import Terminated, interrupts_held, terminations_as_interrupts
from service.score.cli import main as score_main
from test_score_run_loop import (  # noqa: F401 (service: the fixture)
    _DRIVER,
    _photos,
    _rows,
    _start_scorer,
    _wait_for,
    service,
)


def test_interrupts_held_calls_on_stop_as_each_stop_is_held_then_raises_the_first():
    calls: list[int] = []
    # SIGTERM: the suite may run with SIGINT ignored, which interrupts_held leaves alone
    with terminations_as_interrupts():
        with pytest.raises(Terminated):
            with interrupts_held(on_stop=lambda: calls.append(len(calls))):
                signal.raise_signal(signal.SIGTERM)
                signal.raise_signal(signal.SIGTERM)
                assert calls == [0, 1]  # within the body: the body went on after each
    assert calls == [0, 1]


def test_a_stopped_url_run_says_it_waits_for_its_requests_in_flight_before_its_summary(service, tmp_path):  # noqa: F811
    """The first Ctrl-C stops the run, which waits (up to --timeout) for the requests in flight: it did so without
    a word. Now one line says so, and how to abandon them; the summary stays last."""
    folder, out = _photos(tmp_path), tmp_path / "preds.csv"
    where = tmp_path / "hooks"
    where.mkdir()
    proc = _start_scorer(_DRIVER, base_url(service), folder, out, 2, 30, {"STOP_DIR": str(where)})
    try:
        # the first request answered, its rows written; the next two held by the service
        _wait_for(lambda: out.exists() and len(_rows(out)) == 2 and service.posts >= 3, proc, "its first rows")
        proc.send_signal(signal.SIGINT)
        _wait_for((where / "closing").exists, proc, "the wait for the requests in flight")
        service.release.set()
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    lines = [line for line in err.splitlines() if line.strip()]
    assert "Traceback" not in err, err
    assert proc.returncode == 130, err
    assert lines[0] == "waiting for 2 requests in flight (up to 30 s): Ctrl-C again to abandon them", lines
    assert lines[1].startswith("interrupted: scored 2, failed 0"), lines
    assert lines[-1] == f"the rows so far are in {out}: rerun with --resume to continue", lines


def _archive(tmp_path, name: str):
    folder = tmp_path / "photos" / "cat"
    folder.mkdir(parents=True)
    Image.new("RGB", (32, 32)).save(folder / "a.png")
    path = tmp_path / name
    if name.endswith(".zip"):
        with zipfile.ZipFile(path, "w") as z:
            z.write(folder / "a.png", "photos/cat/a.png")
    else:
        with tarfile.open(path, "w:gz") as t:
            t.add(tmp_path / "photos", "photos")
    return path


@pytest.mark.parametrize(
    "name, unpack",
    [
        ("photos.tar.gz", "tar xf {} -C DIR"),
        ("photos.bin", "tar xf {} -C DIR"),  # a tar archive by its content, as training reads one
        ("photos.zip", "unzip {} -d DIR"),
    ],
)
def test_an_archive_given_as_dir_is_to_be_unpacked_with_the_command(tmp_path, capsys, name, unpack):
    archive = _archive(tmp_path, name)
    out = tmp_path / "preds.csv"
    assert score_main([str(archive), "--out", str(out)]) == 2
    command = unpack.format(archive)
    assert capsys.readouterr().err == (
        f"error: {archive} is an archive, not a folder: unpack it (mkdir DIR && {command}) and score DIR\n"
    )
    assert not out.exists()


def test_a_file_that_is_no_archive_is_not_a_folder(tmp_path, capsys):
    given = tmp_path / "notes.txt"
    given.write_text("not images")
    assert score_main([str(given), "--out", str(tmp_path / "preds.csv")]) == 2
    assert capsys.readouterr().err == f"error: {given} is not a folder\n"


def test_a_failed_preload_of_the_cuda_libraries_is_said_as_a_warning(tmp_path, capsys, monkeypatch):
    """On a GPU host whose pip-installed CUDA libraries do not load, runtime logs the failure; the scorer
    configures no logging, so Python printed it as a bare line, unlike the scorer's ``warning: `` lines."""

    def failed() -> None:
        raise OSError("libcudnn.so.9: cannot open shared object file")

    monkeypatch.setattr(runtime.ort, "preload_dlls", failed, raising=False)
    monkeypatch.setattr(runtime, "_preloaded", False)
    monkeypatch.setattr(runtime, "gpu_present", lambda: True)  # a GPU host, as far as the scorer can tell
    folder = tmp_path / "photos"
    folder.mkdir()
    Image.new("RGB", (32, 32), (200, 30, 30)).save(folder / "a.png")
    out = tmp_path / "preds.csv"
    args = [str(folder), "--out", str(out), "--models-dir", str(ROOT / "models"), "--workers", "0", "--no-progress"]
    assert score_main(args) == 0
    err = capsys.readouterr().err.splitlines()
    assert (
        "warning: onnxruntime.preload_dlls() failed (libcudnn.so.9: cannot open shared object file); relying on "
        "the system's CUDA libraries"
    ) in err, err
    assert len(_rows(out)) == 1


def test_a_stop_whose_handler_runs_inside_anothers_abandon_does_not_wait_on_itself(monkeypatch):
    """Python may run a second stop's handler inside the first's, on the same thread: the second ``_abandon`` then
    took the lock the first held, and the scorer hung for good (only kill -9 ended it)."""
    import socket
    import threading

    from service.score import remote, remote_inflight

    # no service to reach: only the abandon's state is used
    monkeypatch.setattr(remote.RemoteBackend, "_model_info", lambda self, model: ("fake", ["a", "b"]))
    monkeypatch.setattr(remote.RemoteBackend, "_check_key", lambda self, given: None)
    backend = remote.RemoteBackend("http://127.0.0.1:9", None, 1, 1.0, 1)
    backend._sockets = list(socket.socketpair())
    shut, nested = remote_inflight._shut, []

    def shut_then_a_second_stop(sock):
        if not nested:
            nested.append(True)
            backend._abandon()  # the second handler, run inside the first's
        shut(sock)

    monkeypatch.setattr(remote_inflight, "_shut", shut_then_a_second_stop)
    worker = threading.Thread(target=backend._abandon, daemon=True)
    worker.start()
    worker.join(5)
    assert not worker.is_alive(), "the second abandon waited on the lock its own thread held"
    for sock in backend._sockets:
        sock.close()
    backend.pool.shutdown()
    backend.client.close()


def test_a_named_pipe_is_no_archive_and_its_probe_does_not_block(tmp_path):
    """``tarfile.is_tarfile`` on a FIFO waits for a writer: doctor --folder FIFO hung until killed."""
    import threading

    from inference.tree_files import is_tar_archive

    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    answers: list[bool] = []
    probe = threading.Thread(target=lambda: answers.append(is_tar_archive(fifo)), daemon=True)
    probe.start()
    probe.join(5)
    if probe.is_alive():  # release the blocked open so the thread ends
        with open(fifo, "wb"):
            pass
    assert answers == [False]


_SLOW_WRITE_DRIVER = r"""
import os, sys, time
from pathlib import Path
from service.score import loop

write, calls = loop.write, []


def slow_write(out, text):
    calls.append(1)
    if len(calls) == 2:  # the first rows' write (after the header), on a slow disk or pipe
        Path(os.environ["MARK"]).touch()
        time.sleep(4)
    return write(out, text)


loop.write = slow_write
from service.__main__ import main
from service.process_end import end_process

end_process(main(sys.argv[1:]))
"""


def test_a_stop_while_rows_are_written_also_says_it_waits_for_the_requests_in_flight(service, tmp_path):  # noqa: F811
    """A Ctrl-C that lands while the run writes rows (not while it waits for them) is raised outside the engine's
    rows: the wait for the requests in flight came after the summary, unsaid."""
    folder, out, mark = _photos(tmp_path), tmp_path / "preds.csv", tmp_path / "writing"
    proc = _start_scorer(_SLOW_WRITE_DRIVER, base_url(service), folder, out, 2, 30, {"MARK": str(mark)})
    try:
        _wait_for(lambda: mark.exists() and service.holding.is_set(), proc, "the first rows' write")
        proc.send_signal(signal.SIGINT)
        threading.Timer(6, service.release.set).start()  # the service answers the held requests a little later
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    lines = [line for line in err.splitlines() if line.strip()]
    assert "Traceback" not in err and proc.returncode == 130, err
    waiting = [i for i, line in enumerate(lines) if line.startswith("waiting for ")]
    summary = [i for i, line in enumerate(lines) if line.startswith("interrupted: ")]
    assert waiting and summary and waiting[0] < summary[0], lines

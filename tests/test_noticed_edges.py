"""Edges noticed at the ends of things: a stop while a command's process exits, a refused split's batch line,
the models a benchmark of a running server records, the ready line beside threads set by hand."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from conftest import ROOT

# ``python -c`` with the stop ARGV[1] raised at the moment ARGV[2] names, after end_process(3) was called, as the
# scorer's and serve's entry points call it once the summary is printed.
_EXITING = r"""
import atexit, os, signal, sys, threading, time

from inference.interrupts import take_over_terminations

stop, where = getattr(signal, sys.argv[1]), sys.argv[2]
take_over_terminations()  # as the scorer does: SIGTERM raises Terminated

if where == "exit handler":  # registered before the end, as libraries register theirs at import
    def handler():
        signal.raise_signal(stop)
        time.sleep(0.1)

    atexit.register(handler)
elif where == "thread join":  # a thread still running when the main thread ends: Python waits for it
    def main_thread_joins():
        frame = sys._current_frames().get(threading.main_thread().ident)
        while frame is not None:
            if frame.f_code.co_name == "_shutdown":
                return True
            frame = frame.f_back
        return False

    def late():
        while not main_thread_joins():
            time.sleep(0.01)
        os.kill(os.getpid(), stop)
        time.sleep(30)  # an exit held up: the stop ends it

    threading.Thread(target=late).start()
elif where == "module teardown":  # after Python gave the signals back their default actions
    class Late:
        def __del__(self):
            signal.raise_signal(stop)
            time.sleep(0.1)

    late = Late()

from service.process_end import end_process

print("scored 4, failed 0", flush=True)
end_process(3)
"""


def _ends_with_the_runs_status(*script: str) -> None:
    """``python -c SCRIPT...`` ends with the status 3 end_process was given, having said only its summary."""
    done = subprocess.run(
        [sys.executable, "-c", *script],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),  # Ctrl-C as in a shell's foreground
    )
    assert done.returncode == 3, (done.returncode, done.stderr)
    assert done.stdout == "scored 4, failed 0\n" and done.stderr == "", (done.stdout, done.stderr)


@pytest.mark.parametrize(
    "stop, where",
    [
        ("SIGINT", "exit handler"),
        ("SIGTERM", "exit handler"),
        ("SIGINT", "thread join"),
        ("SIGINT", "module teardown"),
        ("SIGTERM", "module teardown"),
    ],
)
def test_a_stop_while_the_process_exits_keeps_the_runs_status_and_says_nothing(stop, where):
    """A Ctrl-C in the moment Python exits, after the summary: a KeyboardInterrupt traceback from an exit handler
    or the join of a thread, or the process killed by SIGINT (130 in place of the run's status)."""
    _ends_with_the_runs_status(_EXITING, stop, where)


# What the server at --url answers to GET /models: one model of this checkout's eight.
_LISTING = {"default": "resnet9-half-cifar10-int8", "models": [{"name": "resnet9-half-cifar10-int8"}]}


class _Models(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        body = json.dumps(_LISTING).encode() if self.path == "/models" else b"{}"
        self.send_response(200 if self.path == "/models" else 404)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def models_server():
    """A stand-in for a service at --url that lists ``_LISTING``: (host, port, server)."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Models)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield "127.0.0.1", server.server_address[1], server
    finally:
        server.shutdown()
        server.server_close()


def _bench_service(monkeypatch, tmp_path, host, port, *flags):
    """bench_service.py's main against the server at host:port, with no load sent and no engine measured."""
    import contextlib

    sys.path.insert(0, str(ROOT / "bench"))
    import bench_service

    @contextlib.contextmanager
    def serving(args):
        yield host, port, None

    level = {
        "concurrency": 1,
        "images_per_s": 1.0,
        "requests": 1,
        "latency_ms": {"p50": 1, "p95": 1, "p99": 1},
        "refused": 0,
        "failed": 0,
        "server_cpu_ms_per_image": None,
        "server_memory_peak_mib": None,
    }
    rate = bench_service.raw_engine.EngineRate(1, 1, 1, 10.0, 1.0)
    monkeypatch.setattr(bench_service, "serving", serving)
    monkeypatch.setattr(bench_service, "wait_ready", lambda *a: None)
    monkeypatch.setattr(bench_service, "read_jpegs", lambda archive, pool: [])
    monkeypatch.setattr(bench_service, "build_requests", lambda *a, **k: [])
    monkeypatch.setattr(bench_service, "raw_rates", lambda *a: {rate.label: rate})
    monkeypatch.setattr(bench_service, "run_level", lambda *a: dict(level))
    out = tmp_path / "service.json"
    argv = ["--url", f"http://{host}:{port}", "--concurrency", "1", "--images-per-request", "1", "--out", str(out)]
    return bench_service.main([*argv, *flags]), out


def test_a_benchmark_of_a_server_at_a_url_records_the_models_that_server_serves(monkeypatch, tmp_path, models_server):
    """With --url the results said "models_loaded": 8, the count of this checkout's manifest, beside the figures of
    a server that served one model."""
    host, port, _ = models_server
    status, out = _bench_service(monkeypatch, tmp_path, host, port, "--model", "resnet9-half-cifar10-int8")
    report = json.loads(out.read_text())
    assert status == 0 and report["models_loaded"] == 1, report
    assert report["served_models"] == ["resnet9-half-cifar10-int8"], report


def test_a_model_the_server_at_a_url_does_not_serve_is_refused_before_any_load(monkeypatch, tmp_path, models_server):
    """The checkout's default, which the server at --url does not serve: every request would be refused 400."""
    from inference.errors import UsageError

    host, port, _ = models_server
    with pytest.raises(UsageError, match=r"^http://127.0.0.1:\d+ does not serve wrn-16-4-cifar10-int8 \(it serves "):
        _bench_service(monkeypatch, tmp_path, host, port, "--model", "wrn-16-4-cifar10-int8")
    assert not (tmp_path / "service.json").exists()


def test_the_ready_lines_worker_says_its_share_of_the_cores_not_a_sizing_that_flags_may_override():
    """`serve --threads 3 --decode-threads 5` on 2 cores said "sized for 2 core(s) ... 2 at once on 3 thread(s)
    each": threads set by hand, said as sized for the cores."""
    from service.workers import place_worker

    assert place_worker(1, 1, 0, 2).describe() == "worker 1 of 1 on the CPU with 2 core(s)"
    assert place_worker(2, 2, 1, 8).describe() == "worker 2 of 2 on GPU 0 with 4 core(s)"


# ``python -c``: a child process still running when the run ends, which multiprocessing's exit handler waits for,
# and a Ctrl-C that arrives during that wait (sent from an exit handler that runs just before it).
_CHILD_HOLDS_THE_EXIT = r"""
import atexit, multiprocessing, os, signal, threading, time

def child(parent):
    while os.getppid() == parent:  # ends with the process that waits for it
        time.sleep(0.1)

if __name__ == "__main__":
    multiprocessing.set_start_method("fork")
    multiprocessing.Process(target=child, args=(os.getpid(),)).start()

    def stop_soon():
        threading.Thread(target=lambda: (time.sleep(0.5), os.kill(os.getpid(), signal.SIGINT)), daemon=True).start()

    atexit.register(stop_soon)  # after multiprocessing's own: run before it
    from service.process_end import end_process

    print("scored 4, failed 0", flush=True)
    end_process(3)
"""


def test_a_ctrl_c_still_ends_an_exit_held_up_by_a_child_process_with_the_runs_status():
    """Stops are ignored while the exit handlers run, except where a child process holds the exit up: there a
    Ctrl-C was ignored and the exit waited for the child, however long it ran."""
    _ends_with_the_runs_status(_CHILD_HOLDS_THE_EXIT)


class _Keyed(_Models):
    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        self.send_response(401)
        self.send_header("Content-Length", "0")
        self.end_headers()


def test_a_server_at_a_url_that_asks_for_a_key_is_said_as_such(monkeypatch, tmp_path):
    """A keyed service answered /models with 401, said as "is --url this project's service?"."""
    from inference.errors import UsageError

    server = ThreadingHTTPServer(("127.0.0.1", 0), _Keyed)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with pytest.raises(UsageError, match="asks for an API key, which the benchmark does not send"):
            _bench_service(monkeypatch, tmp_path, "127.0.0.1", server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()


class _GuardStop(Exception):
    """What SIGTERM raises in this test where no handler of the command's own is set (not the default: death)."""


def test_sigterm_while_a_service_command_imports_is_one_line_and_143(monkeypatch, capsys):
    """SIGTERM in the first second of `python -m service ...` (its imports) killed the process silently; Ctrl-C
    there said `interrupted`."""
    import signal

    import service.__main__ as entry

    def guard(signum, frame):
        raise _GuardStop

    def importing():
        signal.raise_signal(signal.SIGTERM)
        raise AssertionError("the stop did not stop the imports")

    previous = signal.signal(signal.SIGTERM, guard)
    try:
        monkeypatch.setattr(entry, "get_args_parser", importing)
        assert entry.main(["doctor"]) == 143
        assert signal.getsignal(signal.SIGTERM) is guard  # given back: each command answers it its own way
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert capsys.readouterr().err.strip() == "SIGTERM: interrupted"

"""A benchmark given what it cannot use (a URL where no service answers, a serve argument the service refuses, a
file that is not the CIFAR-10 archive) says so in one line with status 2, and leaves nothing behind."""

from __future__ import annotations

import argparse
import io
import socket
import subprocess
import sys
import tarfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from conftest import ROOT
from inference.errors import UsageError

sys.path.insert(0, str(ROOT / "bench"))

import http_load  # noqa: E402
import service_runs  # noqa: E402

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="the benchmarks read /proc")


def _bench(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=300)


def _refused(done: subprocess.CompletedProcess, *words: str) -> None:
    assert done.returncode == 2, done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert "Traceback" not in done.stderr and last.startswith("error: "), done.stderr
    assert all(word in last for word in words), done.stderr


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again on leaving: nothing listens there


def test_a_url_where_nothing_listens_is_one_line_and_status_2(tmp_path):
    """It waited two minutes for /readyz, then raised a RuntimeError with its traceback."""
    url = f"http://127.0.0.1:{_closed_port()}"
    done = _bench("bench/bench_service.py", "--url", url, "--pool", "10", "--out", str(tmp_path / "out.json"))
    _refused(done, f"nothing answers at {url}", "--url")
    assert not (tmp_path / "out.json").exists()


@pytest.mark.parametrize("script", ["bench_service", "bench_mixed_models"])
@pytest.mark.parametrize("url", ["localhost:3000", "https://localhost:3000", "http://localhost:3000/api"])
def test_a_url_the_load_generator_cannot_use_is_argparses_usage_error(script, url, tmp_path):
    """The load generator speaks plain HTTP to the routes at the root: 'localhost:3000' was read as host None,
    https and a path prefix were sent plain HTTP at the root."""
    required = ["--slow", "x"] if script == "bench_mixed_models" else []
    done = _bench(f"bench/{script}.py", *required, "--url", url, "--out", str(tmp_path / "out.json"))
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith(f"{script}.py: error: argument --url: "), done.stderr


def test_a_service_that_refuses_to_start_is_one_line_and_status_2(tmp_path):
    """It waited two minutes for a server that had exited at once, then said 'error: No such process' (stopping
    a process group that was gone)."""
    done = _bench(
        "bench/bench_service.py", "--serve-arg=--max-images=-1", "--pool", "10", "--out", str(tmp_path / "out.json")
    )
    _refused(done, "the service exited with status 2 before it was ready: ", "--max-images must be at least 1")
    assert not (tmp_path / "out.json").exists()


def test_stopping_a_server_that_has_ended_is_no_error():
    server = subprocess.Popen([sys.executable, "-c", "pass"], start_new_session=True)
    server.wait()
    service_runs.stop_server(server)


class _Refusing(BaseHTTPRequestHandler):
    """Every POST a 413 on a kept-alive connection, as the service answers a body over --max-body-bytes."""

    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        body = b'{"error": "body over 2000 bytes", "reason": "body_too_large"}'
        self.send_response(413)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


def test_a_level_where_every_request_failed_is_refused_not_reported():
    """With --serve-arg=--max-body-bytes=2000 and 16 JPEGs a request, every request was a 413: the level was
    written as 0 images/s, the refusals' latencies as its percentiles, and the run ended with status 0."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Refusing)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        host, port = server.server_address[:2]
        requests = http_load.build_requests([("a.jpg", b"x")], 1, 5, "m", f"{host}:{port}", count=1)
        args = argparse.Namespace(warmup=0.0, duration=0.2, max_requests=5)
        with pytest.raises(
            UsageError, match=r"every request at concurrency 1 failed \(5\), e.g. 413: .*body over 2000"
        ):
            service_runs.run_level(args, host, port, None, requests, 1, 1, None)
    finally:
        server.shutdown()
        server.server_close()


def _archive(path, members: dict[str, bytes]):
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


def _one_a_class(data: bytes) -> dict[str, bytes]:
    """The members of an archive holding the JPEG 0 of each CIFAR-10 class: ``--images 10``'s."""
    return {f"cifar10/train/{name}/0.jpg": data for name in CLASSES}


@pytest.mark.parametrize("script", ["bench_service", "bench_score"])
@pytest.mark.parametrize("kind", ["not a tar", "no CIFAR JPEGs"])
def test_an_archive_that_is_not_the_cifar_jpegs_is_one_line_and_status_2(script, kind, tmp_path):
    if kind == "not a tar":
        archive = tmp_path / "data.tar.gz"
        archive.write_text("not an archive")
        words = [str(archive), "not a .tar.gz archive", "--archive"]
    else:
        archive = _archive(tmp_path / "data.tar.gz", {"photos/cat.jpg": b"x"})
        words = [str(archive), "holds no cifar10/train/CLASS/N.jpg", "--archive"]
    work = tmp_path / "work"
    done = _bench(
        f"bench/{script}.py",
        *(["--pool", "10"] if script == "bench_service" else ["--images", "10", "--work-dir", str(work)]),
        "--archive",
        str(archive),
        "--out",
        str(tmp_path / "out.json"),
    )
    _refused(done, *words)
    assert "server log" not in done.stderr  # refused before a server was started
    assert not (tmp_path / "out.json").exists()
    assert not work.exists() or not any(work.iterdir())  # no half-extracted copy left in the work dir


@pytest.mark.parametrize("host", ["::1", "127.0.0.1", "localhost", "fe80::1%eth0"])
def test_the_host_header_of_the_load_generators_requests_names_the_server_an_ipv6_one_in_brackets(host):
    """`--url http://[::1]:3000` sent `Host: ::1:3000`, which a server reads as host `::1` port... nothing valid."""
    from urllib.parse import urlsplit

    request = http_load.build_requests([("a.jpg", b"x")], 1, 5, "m", http_load.authority(host, 3000), count=1)[0]
    header = next(line for line in request.split(b"\r\n") if line.startswith(b"Host: "))
    named = urlsplit("http://" + header[len(b"Host: ") :].decode())
    assert (named.hostname, named.port) == (host.lower(), 3000)


class _Shedding(BaseHTTPRequestHandler):
    """Every other POST refused with a 503 (shed over the latency budget), the rest answered 200; counted."""

    protocol_version = "HTTP/1.1"
    answered: list[int] = []

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        status = 503 if len(self.answered) % 2 else 200
        self.answered.append(status)
        body = b'{"error": "overloaded", "reason": "overloaded"}' if status == 503 else b"{}"
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


class _HangingUp(BaseHTTPRequestHandler):
    """Reads a POST and closes the connection without an answer, as a server whose worker died does."""

    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        self.close_connection = True

    def log_message(self, *args) -> None:
        pass


def _serving(handler):
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def test_a_levels_latencies_are_those_of_answered_requests_and_refusals_are_counted_apart():
    """A refusal answered at once was a latency like an answer: the more the service shed, the better its p50
    looked. The JSON said 'errors' alone, refusals and failures together."""
    _Shedding.answered = []
    server = _serving(_Shedding)
    try:
        host, port = server.server_address[:2]
        requests = http_load.build_requests([("a.jpg", b"x")], 1, 5, "m", f"{host}:{port}", count=1)
        args = argparse.Namespace(warmup=0.0, duration=30.0, max_requests=8)
        _Shedding.answered = []  # the warm-up's requests are not the level's
        level = service_runs.run_level(args, host, port, None, requests, 1, 1, None)
    finally:
        server.shutdown()
        server.server_close()
    measured = _Shedding.answered[-8:]
    assert level["requests"] == 8
    assert level["answered"] == measured.count(200) and level["refused"] == measured.count(503) == 4
    assert level["failed"] == 0 and "503" in level["error_samples"][0]


def test_the_latency_percentiles_are_over_the_answered_requests_only():
    result = {"requests": 4, "elapsed_s": 2.0, "latencies": [0.1, 0.3], "errors": [(503, "503: shed"), (500, "500")]}
    figures = http_load.summary(result, per_request=2)
    assert figures["latency_ms"]["p50"] == round(http_load.percentile([0.1, 0.3], 50) * 1000, 2)
    assert (figures["answered"], figures["refused"], figures["failed"]) == (2, 1, 1)
    assert figures["images_per_s"] == 2 * 2 / 2.0


def test_a_level_where_none_was_answered_has_no_percentiles():
    figures = http_load.summary({"requests": 1, "elapsed_s": 1.0, "latencies": [], "errors": [(503, "503")]}, 1)
    assert figures["latency_ms"] == {"p50": None, "p95": None, "p99": None}


def test_a_connection_the_server_closes_is_a_failure_not_a_traceback():
    """An answer cut off by the server was an IncompleteReadError out of the load generator: a traceback, and the
    other levels' figures lost."""
    import asyncio

    server = _serving(_HangingUp)
    try:
        host, port = server.server_address[:2]
        requests = http_load.build_requests([("a.jpg", b"x")], 1, 5, "m", f"{host}:{port}", count=1)
        result = asyncio.run(http_load.load(host, port, requests, 2, 30.0, 10))
    finally:
        server.shutdown()
        server.server_close()
    assert result["latencies"] == [] and len(result["errors"]) == 2  # one per connection, each then ended
    assert all(status == 0 and "connection closed" in text for status, text in result["errors"])


def test_the_images_of_another_archive_are_extracted_anew_not_taken_from_the_work_dir(tmp_path):
    """The work dir kept one folder per count whatever --archive named: another archive's images were scored as
    this one's."""
    import score_runs

    first = _archive(tmp_path / "first.tar.gz", _one_a_class(b"first"))
    second = _archive(tmp_path / "second.tar.gz", _one_a_class(b"second"))
    work = tmp_path / "work"
    assert (score_runs.extract(first, work, 10) / "cat" / "0.jpg").read_bytes() == b"first"
    assert (score_runs.extract(second, work, 10) / "cat" / "0.jpg").read_bytes() == b"second"
    with pytest.raises(UsageError, match="missing.tar.gz: No such file or directory; --archive"):
        score_runs.extract(tmp_path / "missing.tar.gz", work, 10)
    assert (work / "cifar10-10" / "cat" / "0.jpg").read_bytes() == b"second"  # kept: nothing replaced them


def test_a_flag_the_scorer_refuses_is_the_users_mistake_in_one_line(tmp_path):
    """`--ray-flags '--actors 0'` ended the benchmark with SystemExit: status 1 and the scorer's whole usage text."""
    import score_runs

    (tmp_path / "images").mkdir()
    with pytest.raises(UsageError) as refused:
        score_runs.run_scorer(tmp_path / "images", ROOT / "models", "m", None, ["--bogus"], tmp_path / "out.csv")
    said = str(refused.value)
    assert said.startswith("the scorer refused --bogus: ") and "unrecognized arguments: --bogus" in said
    assert "\n" not in said

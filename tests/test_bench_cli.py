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

"""Batch scoring (`python -m service score`): a messy tree, output schemas, resume after a kill, accuracy, --url."""

from __future__ import annotations

import csv
import email
import email.policy
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path, PurePosixPath

import httpx
import numpy as np
import pytest
from PIL import Image

from conftest import ROOT, mock_service, running_service, wait_for_lines
from inference.image_formats import is_image_name
from inference.preprocess import decode_image, to_model_input
from inference.runtime import OnnxClassifier
from service.contract import Limits, ModelInfo, ModelList
from service.score.cli import main as score_main
from service.score.output import OUTPUT_LOST
from service.score.remote import KEY_CHECK_NAME, RemoteBackend
from service.score.sinks import (
    ENCODING,
    CsvFormat,
    JsonlFormat,
    OutputError,
    Prediction,
    Row,
    make_format,
    resume_output,
)

GOOD = [
    "0_top.png",
    "UPPER.JPG",
    "a/deep/er/x.bmp",
    "a/img.jpeg",
    "a-b/z.png",
    "b/anim.gif",
    "b/gray.jpg",
    "b/photo.webp",
    "b/rgba.png",
]
BAD = {
    "bad/broken.webp": "broken symlink",
    "bad/corrupt.jpg": "not a readable image",
    "bad/truncated.png": "not a readable image",
    "bad/zero.png": "empty file",
}


def _cli() -> list[str]:
    return [sys.executable, "-m", "service", "score"]


def _rgb(h: int, w: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def tree(tmp_path_factory, image_folder) -> Path:
    """Nested folders, five formats and several sizes/modes, broken files, a non-image, an empty folder, a link loop."""
    root = tmp_path_factory.mktemp("tree")
    for d in ("a/deep/er", "a-b", "b", "bad", "empty"):
        (root / d).mkdir(parents=True)
    shutil.copy(image_folder / "alpha" / "0000.png", root / "0_top.png")
    Image.fromarray(_rgb(24, 40, 1)).save(root / "UPPER.JPG", quality=90)
    Image.fromarray(_rgb(48, 64, 2)).save(root / "a/img.jpeg")
    Image.fromarray(_rgb(20, 20, 3)).save(root / "a/deep/er/x.bmp")
    shutil.copy(image_folder / "beta" / "0020.png", root / "a-b/z.png")
    Image.fromarray(_rgb(40, 40, 4)).convert("P").save(root / "b/anim.gif")
    Image.fromarray(_rgb(32, 32, 5)).convert("L").save(root / "b/gray.jpg")
    Image.fromarray(_rgb(30, 50, 6)).save(root / "b/photo.webp")
    Image.fromarray(np.dstack([_rgb(17, 33, 7), np.full((17, 33), 128, np.uint8)]), "RGBA").save(root / "b/rgba.png")
    (root / "bad/corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not really a jpeg" * 10)
    (root / "bad/truncated.png").write_bytes((image_folder / "gamma" / "0040.png").read_bytes()[:120])
    (root / "bad/zero.png").write_bytes(b"")
    os.symlink("missing.webp", root / "bad/broken.webp")
    os.symlink("..", root / "a/loop")  # a/loop/a/loop/... must not be walked
    (root / "notes.txt").write_text("not an image")
    (root / "b/README").write_text("no extension either")
    (root / "b/._photo.webp").write_bytes(b"\x00\x05\x16\x07 AppleDouble metadata a Mac leaves beside a copy")
    return root


def _csv_rows(path: Path) -> list[dict]:
    with open(path, newline="", **ENCODING) as f:  # a name that is not UTF-8 is written as its bytes
        return list(csv.DictReader(f))


def _score(*args) -> int:
    return score_main([str(a) for a in args])


def _sorted(paths) -> list[str]:
    return [str(p) for p in sorted(PurePosixPath(p) for p in paths)]


def test_messy_tree_csv(tree, tiny_models_dir, tmp_path, capsys):
    out = tmp_path / "preds.csv"
    assert (
        _score(
            tree,
            "--out",
            out,
            "--models-dir",
            tiny_models_dir,
            "--k",
            2,
            "--batch-size",
            4,
            "--workers",
            1,
            "--no-progress",
        )
        == 0
    )
    rows = _csv_rows(out)
    assert list(rows[0]) == ["path", "label_1", "confidence_1", "label_2", "confidence_2", "error"]
    assert [r["path"] for r in rows] == _sorted(GOOD + list(BAD))  # deterministic, sorted, each file once
    by_path = {r["path"]: r for r in rows}
    for path, message in BAD.items():
        assert message in by_path[path]["error"] and by_path[path]["label_1"] == ""
    # Scores are those of the model on the shared decode path, whatever the format, size or mode.
    clf = OnnxClassifier(tiny_models_dir / "tiny.onnx", device="cpu")
    batch = to_model_input([decode_image((tree / p).read_bytes(), fit=clf.card.input.fit) for p in GOOD])
    probs = clf.probabilities(batch)
    for path, p in zip(GOOD, probs):
        row = by_path[path]
        order = np.argsort(-p, kind="stable")
        assert row["error"] == ""
        assert [row["label_1"], row["label_2"]] == [clf.card.classes[i] for i in order[:2]]
        assert abs(float(row["confidence_1"]) - p[order[0]]) < 2e-6
    err = capsys.readouterr().err
    assert f"scored {len(GOOD)}, failed {len(BAD)}, skipped 3 (not images, or hidden)" in err
    assert "a/loop" in err and "images/s" in err and "Traceback" not in err


def test_jsonl_schema_and_inline_decoding(tree, tiny_models_dir, tmp_path, capsys):
    csv_out, jsonl_out = tmp_path / "p.csv", tmp_path / "p.jsonl"
    common = ["--models-dir", tiny_models_dir, "--no-progress", "--k", 5]
    assert _score(tree, "--out", csv_out, "--workers", 2, *common) == 0
    assert _score(tree, "--out", jsonl_out, "--workers", 0, "--model", "tiny", *common) == 0
    records = [json.loads(line) for line in jsonl_out.read_text().splitlines()]
    assert [r["path"] for r in records] == [r["path"] for r in _csv_rows(csv_out)] == _sorted(GOOD + list(BAD))
    for record, row in zip(records, _csv_rows(csv_out)):
        assert set(record) == {"path", "top_k", "error"}
        if record["error"]:
            assert record["top_k"] == [] and record["error"] == row["error"]
            continue
        assert record["error"] is None and len(record["top_k"]) == 3  # k capped at the 3 classes
        assert [set(t) for t in record["top_k"]] == [{"label", "index", "confidence"}] * 3
        assert [t["label"] for t in record["top_k"]] == [row[f"label_{i}"] for i in (1, 2, 3)]
        assert abs(record["top_k"][0]["confidence"] - float(row["confidence_1"])) < 2e-6
        confidences = [t["confidence"] for t in record["top_k"]]
        assert confidences == sorted(confidences, reverse=True) and abs(sum(confidences) - 1) < 1e-4


def test_concurrent_streams_keep_the_output_identical(tree, tiny_models_dir, tmp_path):
    common = ["--models-dir", tiny_models_dir, "--no-progress", "--k", 2, "--batch-size", 2]
    outputs = {}
    for label, flags in {
        "one stream": ["--streams", 1, "--workers", 1],
        "three streams": ["--streams", 3, "--workers", 1],
        "streams decoding": ["--streams", 2, "--workers", 0],
    }.items():
        out = tmp_path / f"{label}.csv"
        assert _score(tree, "--out", out, *flags, *common) == 0
        outputs[label] = out.read_bytes()
    assert outputs["three streams"] == outputs["one stream"] == outputs["streams decoding"]


def test_pipeline_finishes_streams_at_once_and_yields_in_order():
    import threading

    from service.score.pipeline import pipeline

    class Backend:
        streams, inflight = 2, 4
        barrier = threading.Barrier(2, timeout=10)  # broken (an error) unless two finishes overlap

        def submit(self, chunk):
            return chunk[0] * 10

        def finish(self, chunk, handle):
            if chunk[0] < 4:
                self.barrier.wait()
            return [handle]

    assert list(pipeline(iter([[i] for i in range(9)]), Backend())) == [[i * 10] for i in range(9)]


def test_pipeline_hands_the_next_chunk_to_whichever_stream_is_free():
    """Chunk 0 is slow: the other stream finishes chunk 1 and must go on with chunk 2 (and 3) meanwhile,
    not wait until chunk 0 is done and taken."""
    import threading

    from service.score.pipeline import pipeline

    class Backend:
        streams, inflight = 2, 4
        later_started = threading.Event()

        def submit(self, chunk):
            return chunk[0]

        def finish(self, chunk, handle):
            if handle == 0:
                assert self.later_started.wait(timeout=10), "chunk 2 waited for chunk 0"
            elif handle == 2:
                self.later_started.set()
            return [handle]

    assert list(pipeline(iter([[i] for i in range(6)]), Backend())) == [[i] for i in range(6)]


def test_a_chunk_with_a_file_left_without_a_row_is_an_error_not_a_lost_file():
    from service.score.sinks import Row, whole

    assert whole([Row("a.png"), Row("b.png", error="x")]) == [Row("a.png"), Row("b.png", error="x")]
    with pytest.raises(RuntimeError, match="1 of 2 files were given no row"):
        whole([Row("a.png"), None])


def test_decode_workers_killed_mid_run_cost_no_rows(image_folder, tiny_models_dir):
    """Workers killed (as by the OOM killer) with chunks in flight and two streams finishing: the pool is
    replaced and every image is still scored, with the scores it gets when decoded in this process."""
    from service.score.local import LocalBackend
    from service.score.pipeline import pipeline
    from service.score.walk import Entry

    paths = sorted(image_folder.rglob("*.png"))
    chunks = [[Entry(p.name, str(p)) for p in paths[i : i + 6]] for i in range(0, len(paths), 6)]
    expected = (
        OnnxClassifier(tiny_models_dir / "tiny.onnx", device="cpu")
        .probabilities(to_model_input([decode_image(p.read_bytes(), fit="center_crop") for p in paths]))
        .max(axis=1)
    )
    backend = LocalBackend(tiny_models_dir / "tiny.onnx", "cpu", 1, 2, 6, streams=2)
    backend.k = 1
    try:

        def killing_workers():
            for n, chunk in enumerate(chunks):
                if n in (2, 5):  # chunks are in flight: the ones the dead workers held must be redone
                    # read under the lock a stream replacing the pool holds: between the old pool and the new
                    # one there is none
                    with backend._pool_lock:
                        workers = list(backend.pool._processes.values())
                    for process in workers:
                        process.kill()
                        process.join()
                yield chunk

        rows = [row for rows in pipeline(killing_workers(), backend) for row in rows]
    finally:
        backend.close()
    assert backend._generation >= 2  # the pool was replaced
    assert [r.path for r in rows] == [p.name for p in paths]
    assert all(r.error is None for r in rows), [r.error for r in rows if r.error][:3]
    np.testing.assert_allclose([r.top_k[0].confidence for r in rows], expected, atol=2e-6)


def test_a_broken_pool_with_a_worker_that_outlives_sigterm_is_closed_not_waited_on(tiny_models_dir, tmp_path):
    """One worker dies while another is busy and survives the SIGTERM its pool's manager thread sends (as one
    the pool started while it was terminating the others gets none): closing the broken pool kills it instead
    of waiting for it (forever, in CI: the manager thread joins it and the close joins that thread)."""
    code = (
        "import os, signal, sys, time\n"
        "from concurrent.futures import wait\n"
        "from service.score.local import LocalBackend\n"
        "def stubborn(path):\n"
        "    signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "    open(path, 'w').write(str(os.getpid()))\n"
        "    time.sleep(600)\n"
        "b = LocalBackend(sys.argv[1], 'cpu', 1, 2, 8, streams=1)\n"
        "stuck = b.pool.submit(stubborn, sys.argv[2])\n"
        "while not os.path.exists(sys.argv[2]) or not open(sys.argv[2]).read():\n"
        "    time.sleep(0.05)\n"
        "wait([b.pool.submit(os._exit, 1)])\n"  # the other worker dies, as in a decoder crash
        "b.close()\n"
        "pid = int(open(sys.argv[2]).read())\n"
        "print('closed', os.path.exists(f'/proc/{pid}'), type(stuck.exception()).__name__)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(tiny_models_dir / "tiny.onnx"), str(tmp_path / "stubborn.pid")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,  # the old code waited the stuck worker's 600 s
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["closed", "False", "BrokenProcessPool"]


def test_a_model_file_with_a_card_this_version_cannot_read_is_an_error_line_not_a_traceback(
    tree, tiny_models_dir, tmp_path, capsys
):
    """The manifest's checksum matches (the file was exported so), but the card inside is another schema's."""
    import onnx

    from inference.manifest import METADATA_KEY, sha256_file

    models = tmp_path / "models"
    shutil.copytree(tiny_models_dir, models)
    graph = onnx.load(str(models / "tiny.onnx"))
    [prop] = [p for p in graph.metadata_props if p.key == METADATA_KEY]
    prop.value = json.dumps({**json.loads(prop.value), "field_of_a_newer_version": 1})
    onnx.save(graph, str(models / "tiny.onnx"))
    manifest = json.loads((models / "manifest.json").read_text())
    for entry in manifest["models"]:
        if entry["name"] == "tiny":
            entry["sha256"] = sha256_file(models / "tiny.onnx")
    (models / "manifest.json").write_text(json.dumps(manifest))
    assert _score(tree, "--models-dir", models, "--model", "tiny", "--out", tmp_path / "p.csv", "--no-progress") == 2
    err = capsys.readouterr().err
    assert "field_of_a_newer_version" in err and "export it again" in err and "Traceback" not in err


def _children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        try:
            if entry.isdigit() and open(f"/proc/{entry}/stat").read().rsplit(")", 1)[1].split()[1] == str(pid):
                found.append(int(entry))
        except OSError:
            pass
    return found


def _running(pid: int) -> bool:
    try:
        return open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_first_decode_pool_forks_only_from_a_single_threaded_process(image_folder, tiny_models_dir):
    """The command line starts its backend single-threaded: its workers fork from it, with nothing to import.
    Started beside another thread (an embedding program), the pool comes from a forkserver instead, which
    copies no other thread's locks. Both decode alike."""
    from service.score.local import LocalBackend
    from service.score.walk import Entry

    paths = sorted(image_folder.rglob("*.png"))[:5]
    code = (
        "import sys; from service.score.local import LocalBackend; from service.score.walk import Entry\n"
        "b = LocalBackend(sys.argv[1], 'cpu', 1, 2, 8, streams=1); b.k = 1\n"
        "rows = b.finish(chunk := [Entry(p, p) for p in sys.argv[2:]], b.submit(chunk))\n"
        "print(b.start_method, *(f'{r.top_k[0].label}:{r.top_k[0].confidence:.6f}' for r in rows)); b.close()"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(tiny_models_dir / "tiny.onnx"), *map(str, paths)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    method, *forked = done.stdout.split()
    assert method == "fork"

    import threading

    release = threading.Event()
    other = threading.Thread(target=release.wait, daemon=True)
    other.start()
    backend = LocalBackend(tiny_models_dir / "tiny.onnx", "cpu", 1, 2, 8, streams=1)
    try:
        backend.k = 1
        chunk = [Entry(str(p), str(p)) for p in paths]
        rows = backend.finish(chunk, backend.submit(chunk))
        assert backend.start_method == "forkserver"
    finally:
        release.set()
        backend.close()
    assert [f"{r.top_k[0].label}:{r.top_k[0].confidence:.6f}" for r in rows] == forked


def test_fail_on_error_and_user_errors(tree, tiny_models_dir, tmp_path, capsys):
    models = ["--models-dir", tiny_models_dir, "--no-progress"]
    to_dev_null = ["--out", "/dev/null", "--format", "csv"]
    assert _score(tree, "--out", tmp_path / "p.csv", "--fail-on-error", *models) == 1
    assert _score(tree / "a-b", "--out", tmp_path / "q.csv", "--fail-on-error", *models) == 0
    capsys.readouterr()
    cases = {
        "does not exist": [tmp_path / "nope", "--out", tmp_path / "x.csv", *models],
        "unknown model 'nope'; available: tiny, tiny-int8": [tree, "--model", "nope", *models],
        "--model is empty": [tree, "--model", "", *models],
        "--k must be at least 1": [tree, "--k", 0, *models],
        "--batch-size must be at least 1": [tree, "--batch-size", 0, *models],
        "--streams must be at least 1": [tree, "--streams", 0, *models],
        "cannot write": [tree, "--out", tmp_path / "no" / "such" / "dir.csv", *models],
        "cannot tell the output format": [tree, "--out", tmp_path / "p.parquet", *models],
        "no model manifest": [tree, "--models-dir", tmp_path],
        "--resume needs --out FILE": [tree, "--resume", *models],
        "--max-pixels must be at least 1, not 0": [tree, "--max-pixels", 0, *models],
        "--timeout must be a number of seconds above 0, not -1": [tree, "--url", "http://x.test", "--timeout", -1],
        "--timeout must be a number of seconds above 0, not nan": [tree, "--url", "http://x.test", "--timeout", "nan"],
        "--resume needs --out to be a file it can read back": [tree, *to_dev_null, "--resume", *models],
        # a folder has no suffix either: the message says what is wrong, not that the format is unknown
        f"--out {tmp_path} is a folder": [tree, "--out", tmp_path, *models],
    }
    for message, args in cases.items():
        assert _score(*args) == 2, message
        err = capsys.readouterr().err
        assert "error: " in err and message in err and "Traceback" not in err, err
    # a device that refuses every write: the header already fails
    assert _score(tree, "--out", "/dev/full", "--format", "csv", *models) == OUTPUT_LOST
    err = capsys.readouterr().err
    assert "error: cannot write /dev/full: No space left on device" in err and "Traceback" not in err, err


def test_fail_on_error_counts_the_failed_rows_a_resume_keeps(tree, tiny_models_dir, tmp_path, capsys):
    """A run stopped after its failed files and resumed exited 0 with --fail-on-error: its status hung on where the
    first run stopped."""
    out = tmp_path / "p.csv"
    models = ["--models-dir", tiny_models_dir, "--no-progress"]
    assert _score(tree, "--out", out, *models) == 0
    capsys.readouterr()
    assert _score(tree, "--out", out, "--resume", "--fail-on-error", *models) == 1
    assert f"already in {out} (resumed, {len(BAD)} of them failed)" in capsys.readouterr().err
    assert _score(tree / "a-b", "--out", tmp_path / "q.csv", *models) == 0
    assert _score(tree / "a-b", "--out", tmp_path / "q.csv", "--resume", "--fail-on-error", *models) == 0


def test_a_malformed_url_is_a_usage_error_naming_it(tree, capsys):
    """httpx refused these in a traceback (exit 1), or as an "unsupported protocol 'localhost://'"."""
    cases = {
        "http://[::1": " is not a valid URL: Invalid port",
        "http://localhost:30a0": " is not a valid URL: Invalid port: '30a0'",
        "localhost:3000": " names no protocol: did you mean --url http://localhost:3000?",
        "ftp://scorer.test": ": the service is reached by http:// or https://, not ftp://",
        "http://": " names no host",
        "http://scorer.test:70000": ": port 70000 is not a TCP port (1 to 65535)",
    }
    for url, message in cases.items():
        assert _score(tree, "--url", url, "--no-progress") == 2, url
        err = capsys.readouterr().err
        assert err.startswith(f"error: --url {url!r}{message}") and err.count("\n") == 1, err


def test_flags_of_another_engine_are_refused_and_their_defaults_do_not_count(
    tree, tiny_models_dir, tmp_path, monkeypatch, capsys
):
    """--timeout, --device, --models-dir and --max-pixels were ignored by the engines that do not use them; a
    default (argparse's, before) must not count as given."""
    url = ["--url", "http://scorer.test"]
    cases: dict[str, list] = {
        "--timeout is not for --engine local (it is for --engine remote)": ["--timeout", 5],
        "--device is not for --engine remote (it is for --engine local, ray)": [*url, "--device", "cuda"],
        "--models-dir is not for --engine remote (it is for --engine local, ray)": [*url, "--models-dir", "/nope"],
        "--max-pixels is not for --engine remote (it is for --engine local, ray)": [*url, "--max-pixels", 10**9],
        "--timeout is not for --engine ray (it is for --engine remote)": ["--engine", "ray", "--timeout", 5],
    }
    for message, args in cases.items():
        assert _score(tree, "--no-progress", "--out", "/dev/null", "--format", "csv", *args) == 2, message
        err = capsys.readouterr().err
        assert err == f"error: {message}\n", err
    # Left out, each engine's flags take their defaults, and the other engines' do not count.
    assert _score(tree / "a-b", "--models-dir", tiny_models_dir, "--out", tmp_path / "local.csv", "--no-progress") == 0
    handler, _ = _classify_handler()
    mock_service(monkeypatch, handler)
    assert _score(tree / "a-b", *url, "--out", tmp_path / "remote.csv", "--no-progress") == 0


def test_max_pixels_reaches_the_decoders_and_the_error_row_says_how_to_raise_it(tree, tiny_models_dir, tmp_path):
    """An image over the pixel limit could not be scored at all: score had no --max-pixels, as serve has."""
    from inference.image_limits import ImageTooLarge
    from service.score.decode import failure_message

    folder = tmp_path / "two"
    folder.mkdir()
    for name in ("a/img.jpeg", "a/deep/er/x.bmp"):  # 64x48 and 20x20
        shutil.copy(tree / name, folder)
    common = [folder, "--models-dir", tiny_models_dir, "--no-progress", "--overwrite"]
    for workers in (1, 0):  # decoding in worker processes, and in this one
        out = tmp_path / f"{workers}.csv"
        assert _score(*common, "--out", out, "--workers", workers, "--max-pixels", 48 * 64 - 1) == 0
        errors = {r["path"]: r["error"] for r in _csv_rows(out)}
        assert errors == {
            "x.bmp": "",
            "img.jpeg": "image is 64x48 = 3072 pixels, over the limit of 3071; --max-pixels raises the limit "
            "(score again with --overwrite: --resume keeps this row)",
        }, workers
        assert _score(*common, "--out", out, "--workers", workers, "--max-pixels", 48 * 64) == 0
        assert not any(r["error"] for r in _csv_rows(out))
    # a side over MAX_SIDE is over a limit no flag raises
    assert "--max-pixels" not in failure_message(ImageTooLarge("image is 1x70000: a side over the limit"))


def test_only_the_scoring_models_file_is_checked_against_the_manifest(tree, tiny_models_dir, tmp_path, capsys):
    """A folder with the manifest and one model's file scores with that model; the missing or altered file of
    the model asked for is named, never another model's."""
    models = tmp_path / "models"
    models.mkdir()
    shutil.copy(tiny_models_dir / "manifest.json", models)
    shutil.copy(tiny_models_dir / "tiny.onnx", models)
    args = [tree / "a-b", "--models-dir", models, "--no-progress", "--out", tmp_path / "p.csv", "--overwrite"]
    assert _score(*args, "--model", "tiny") == 0
    assert [(row["path"], row["error"]) for row in _csv_rows(tmp_path / "p.csv")] == [("z.png", "")]
    capsys.readouterr()
    assert _score(*args, "--model", "tiny-int8") == 2
    assert f"error: model 'tiny-int8': file {models / 'tiny-int8.onnx'} is missing" in capsys.readouterr().err
    (models / "tiny.onnx").write_bytes((models / "tiny.onnx").read_bytes()[:-10])
    assert _score(*args, "--model", "tiny") == 2
    assert "error: model 'tiny': file" in capsys.readouterr().err


def _many_images(image_folder: Path, root: Path, count: int) -> Path:
    sources = sorted(image_folder.rglob("*.png"))
    for i in range(count):
        d = root / f"d{i // 100}"
        d.mkdir(parents=True, exist_ok=True)
        (d / f"{i:04d}.png").write_bytes(sources[i % len(sources)].read_bytes())
    return root


def test_a_failing_write_stops_the_run_with_the_rows_kept_for_resume(image_folder, tiny_models_dir, tmp_path):
    """A disk that fills up mid-run (here: a file-size limit, EFBIG): a one-line error and the summary with the
    resume hint, not a traceback; the rows written so far resume to the complete output."""
    import resource

    root = _many_images(image_folder, tmp_path / "many", 300)
    out = tmp_path / "preds.csv"
    cmd = [*_cli(), root, "--out", out, "--models-dir", tiny_models_dir, "--batch-size", 8, "--k", 1, "--workers", 0]
    cmd = [str(c) for c in cmd]
    limit = 4096  # a few dozen rows: the run is stopped part-way

    def small_files() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120, preexec_fn=small_files)
    assert done.returncode == OUTPUT_LOST, done.stderr
    assert f"error: cannot write {out}: File too large" in done.stderr, done.stderr
    assert "stopped: scored" in done.stderr and "rerun with --resume" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    assert 0 < len(_csv_rows(out)) < 300 and out.stat().st_size <= limit

    done = subprocess.run([*cmd, "--resume"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    rows = _csv_rows(out)
    assert [r["path"] for r in rows] == _sorted(p.relative_to(root).as_posix() for p in root.rglob("*.png"))
    assert not any(r["error"] for r in rows)


def test_no_shared_memory_means_decoding_in_process(image_folder, tiny_models_dir, monkeypatch, capsys):
    """/dev/shm missing or read-only: the decode workers' shared memory cannot be made, so the scorer warns and
    decodes in its own process instead of failing with a traceback."""
    import multiprocessing.shared_memory

    from service.score.local import LocalBackend
    from service.score.walk import Entry

    def refused(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(multiprocessing.shared_memory, "SharedMemory", refused)
    backend = LocalBackend(tiny_models_dir / "tiny.onnx", "cpu", 1, 1, 4, streams=1)
    try:
        assert backend.workers == 0 and backend.pool is None and backend.shm is None
        backend.k = 1
        paths = sorted(image_folder.rglob("*.png"))[:4]
        chunk = [Entry(str(p), str(p)) for p in paths]
        rows = backend.finish(chunk, backend.submit(chunk))
    finally:
        backend.close()
    assert [r.error for r in rows] == [None] * 4 and all(r.top_k for r in rows)
    err = capsys.readouterr().err
    assert "warning: no shared memory for the decode workers (Permission denied): decoding in this process" in err


def test_a_reader_that_goes_away_stops_the_scorer_quietly(image_folder, tiny_models_dir, tmp_path):
    """`score DIR | head -1`: once the reader has closed the pipe, the scorer ends as a Unix tool does (status
    128 + SIGPIPE, nothing on standard error), not with a BrokenPipeError traceback."""
    root = _many_images(image_folder, tmp_path / "many", 300)
    cmd = [*_cli(), root, "--models-dir", tiny_models_dir, "--batch-size", 4, "--k", 1, "--no-progress"]
    proc = subprocess.Popen([str(c) for c in cmd], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout.readline().startswith(b"path,")
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 128 + signal.SIGPIPE, err
    assert "Traceback" not in err and "Error" not in err, err


def test_min_confidence_marks_rows_in_csv_and_jsonl(tree, tiny_models_dir, tmp_path, capsys):
    common = ["--models-dir", tiny_models_dir, "--no-progress", "--k", 2, "--workers", 0]
    assert _score(tree, "--out", tmp_path / "plain.csv", *common) == 0
    plain = {r["path"]: r for r in _csv_rows(tmp_path / "plain.csv")}
    top1 = sorted(float(r["confidence_1"]) for r in plain.values() if not r["error"])
    threshold = (top1[len(top1) // 2 - 1] + top1[len(top1) // 2]) / 2  # between two scores: some rows each side
    assert top1[0] < threshold < top1[-1]
    capsys.readouterr()

    assert _score(tree, "--out", tmp_path / "marked.csv", "--min-confidence", threshold, *common) == 0
    rows = _csv_rows(tmp_path / "marked.csv")
    assert list(rows[0]) == ["path", "label_1", "confidence_1", "label_2", "confidence_2", "confident", "error"]
    assert [r["path"] for r in rows] == list(plain)  # marked, none left out
    for row in rows:
        expected = "" if row["error"] else ("true" if float(row["confidence_1"]) >= threshold else "false")
        assert row["confident"] == expected and row["label_1"] == plain[row["path"]]["label_1"]
    below = sum(r["confident"] == "false" for r in rows)
    assert f"scored {len(GOOD)} ({below} below --min-confidence {threshold:g})" in capsys.readouterr().err

    assert _score(tree, "--out", tmp_path / "marked.jsonl", "--min-confidence", threshold, *common) == 0
    records = [json.loads(line) for line in (tmp_path / "marked.jsonl").read_text().splitlines()]
    assert [list(r) for r in records] == [["path", "top_k", "confident", "error"]] * len(records)
    assert [r["confident"] for r in records] == [None if r["error"] else r["confident"] == "true" for r in rows]


def test_resume_counts_the_kept_rows_below_min_confidence(tree, tiny_models_dir, tmp_path, capsys):
    """A resumed run's "N below --min-confidence" left out the rows already in the file, which the failed count and
    the accuracy take in: they are said with the resumed rows, as their failures are."""
    common = ["--models-dir", tiny_models_dir, "--no-progress", "--k", 2, "--workers", 0]
    assert _score(tree, "--out", tmp_path / "plain.csv", *common) == 0
    top1 = sorted(float(r["confidence_1"]) for r in _csv_rows(tmp_path / "plain.csv") if not r["error"])
    threshold = (top1[len(top1) // 2 - 1] + top1[len(top1) // 2]) / 2
    out = tmp_path / "marked.csv"
    assert _score(tree, "--out", out, "--min-confidence", threshold, *common) == 0
    lines = out.read_text(**ENCODING).splitlines(keepends=True)
    below = [line for line in lines[1:] if ",false," in line]
    failed = [line for line in lines[1:] if not line.endswith(",\n")]
    assert 0 < len(below) < len(GOOD) and len(failed) == len(BAD)
    capsys.readouterr()

    out.write_text(lines[0] + "".join(below), **ENCODING)  # as if stopped after its unconfident rows
    assert _score(tree, "--out", out, "--resume", "--min-confidence", threshold, *common) == 0
    err = capsys.readouterr().err
    assert f"scored {len(GOOD) - len(below)} (0 below --min-confidence {threshold:g})" in err, err
    assert f"{len(below)} already in {out} (resumed, {len(below)} of them below --min-confidence);" in err, err

    out.write_text(lines[0] + "".join(below + failed), **ENCODING)
    assert _score(tree, "--out", out, "--resume", "--min-confidence", threshold, *common) == 0
    err = capsys.readouterr().err
    resumed = f"(resumed, {len(BAD)} of them failed, {len(below)} below --min-confidence): --overwrite scores all again"
    assert f"{len(below) + len(BAD)} already in {out} {resumed}" in err, err


def test_min_confidence_out_of_range_is_a_usage_error(tree, tiny_models_dir, tmp_path, capsys):
    """A number out of range is refused as the integer flags' values are (--max-pixels 0): one line, no usage
    block; argparse printed its usage first. What is no number at all is argparse's, as for those flags."""
    shown = {"1.5": "1.5", "-0.1": "-0.1", "nan": "nan", "1e400": "inf", " 2 ": "2"}
    for value, said in shown.items():
        assert _score(tree, "--models-dir", tiny_models_dir, "--min-confidence", value) == 2, value
        assert capsys.readouterr().err == f"error: --min-confidence must be between 0 and 1, not {said}\n"
    for value in ("high", ""):
        with pytest.raises(SystemExit) as exit_info:
            _score(tree, "--models-dir", tiny_models_dir, "--min-confidence", value)
        assert exit_info.value.code == 2, value
        err = capsys.readouterr().err
        assert "usage: " in err and "error: argument --min-confidence: must be a number from 0 to 1, got " in err, err
        assert "Traceback" not in err
    done = subprocess.run(
        [*_cli(), str(tree), "--models-dir", str(tiny_models_dir), "--min-confidence", "2"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert (done.returncode, done.stderr) == (2, "error: --min-confidence must be between 0 and 1, not 2\n")


def test_min_confidence_just_out_of_range_is_shown_as_given(tree, tiny_models_dir, capsys):
    """1.0000001 was refused as "must be between 0 and 1, not 1": six digits of %g rounded it into the range."""
    for value, said in {"1.0000001": "1.0000001", "-0.00000001": "-1e-08", "1.5": "1.5"}.items():
        assert _score(tree, "--models-dir", tiny_models_dir, "--min-confidence", value) == 2, value
        assert capsys.readouterr().err == f"error: --min-confidence must be between 0 and 1, not {said}\n"


def test_an_existing_output_is_continued_or_replaced_only_when_asked(tree, tiny_models_dir, tmp_path, capsys):
    """Nothing of the user's is replaced silently: an existing --out needs --resume or --overwrite, an image the
    run scores is never an output, a contradicting --format and a folder without images are usage errors, all
    found before the output is opened."""
    common = ["--models-dir", tiny_models_dir, "--no-progress"]
    kept = tmp_path / "kept.csv"
    kept.write_text("my notes\n")
    assert _score(tree, "--out", kept, *common) == 2
    assert f"{kept} exists: --resume continues it, --overwrite replaces it" in capsys.readouterr().err
    assert kept.read_text() == "my notes\n"
    assert _score(tree, "--out", kept, "--resume", "--overwrite", *common) == 2
    assert "pass one of them" in capsys.readouterr().err
    assert _score(tree, "--out", kept, "--overwrite", *common) == 0
    assert _csv_rows(kept) and kept.read_text().startswith("path,label_1,")
    # A run that stopped before its first row left only the header: nothing to lose, so it is simply replaced.
    header_only = tmp_path / "header.csv"
    header_only.write_text(kept.read_text().splitlines()[0] + "\n")
    assert _score(tree, "--out", header_only, *common) == 0 and _csv_rows(header_only)
    capsys.readouterr()

    folder = tmp_path / "photos"
    shutil.copytree(tree / "b", folder)
    image = next(p for p in sorted(folder.rglob("*")) if p.is_file() and is_image_name(p.name))
    before = image.read_bytes()
    assert _score(folder, "--out", image, "--format", "csv", "--overwrite", *common) == 2
    assert f"--out {image} is one of the images under {folder}" in capsys.readouterr().err
    assert image.read_bytes() == before

    assert _score(tree, "--out", tmp_path / "x.csv", "--format", "jsonl", *common) == 2
    assert "--format jsonl contradicts --out" in capsys.readouterr().err and not (tmp_path / "x.csv").exists()

    empty = tmp_path / "no-images"
    (empty / "sub").mkdir(parents=True)
    (empty / "sub" / "notes.txt").write_text("not an image")
    assert _score(empty, "--out", kept, "--overwrite", *common) == 2
    err = capsys.readouterr().err
    assert f"error: no image files under {empty} (1 other file skipped; image extensions: " in err
    assert _csv_rows(kept)  # the earlier rows are still there


def test_overwrite_stopped_before_its_first_rows_keeps_the_old_ones(
    tree, tiny_models_dir, tmp_path, capsys, monkeypatch
):
    """--overwrite replaces the old rows only once new ones are written: a Ctrl-C while the first batch decodes
    left a header-only file where the old results were. Once rows are written the file is the new run's,
    resumable, with the old file's mode, and a link to it still a link."""
    import service.score.loop as loop

    common = ["--models-dir", tiny_models_dir, "--no-progress", "--batch-size", "2"]
    old = tmp_path / "old.csv"
    assert _score(tree, "--out", old, "--k", "1", *common) == 0
    old.chmod(0o640)
    before = old.read_bytes()
    link = tmp_path / "link.csv"
    link.symlink_to(old)

    def chunks_interrupted(*a, **kw):  # Ctrl-C before the first batch is handed to the engine
        raise KeyboardInterrupt
        yield

    monkeypatch.setattr(loop, "chunks", chunks_interrupted)
    assert _score(tree, "--out", link, "--k", "2", "--overwrite", *common) == 130
    err = capsys.readouterr().err
    assert f"{link} is as it was" in err and "--resume" not in err, err
    assert old.read_bytes() == before and link.is_symlink()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link.csv", "old.csv"]  # no partial file left

    monkeypatch.undo()
    real_write, writes = loop.write, []

    def write_twice(out, text):  # the header, the first batch's rows, then Ctrl-C
        writes.append(text)
        if len(writes) == 3:
            raise KeyboardInterrupt
        real_write(out, text)

    monkeypatch.setattr(loop, "write", write_twice)
    assert _score(tree, "--out", link, "--k", "2", "--overwrite", *common) == 130
    err = capsys.readouterr().err
    assert "rerun with --resume to continue" in err
    rows = _csv_rows(old)
    assert len(rows) == 2 and "label_2" in rows[0] and link.is_symlink()
    monkeypatch.setattr(loop, "write", real_write)
    assert oct(old.stat().st_mode & 0o777) == oct(0o640)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link.csv", "old.csv"]
    assert _score(tree, "--out", link, "--k", "2", "--resume", *common) == 0
    full = tmp_path / "full" / "p.csv"
    full.parent.mkdir()
    assert _score(tree, "--out", full, "--k", "2", *common) == 0
    assert len(_csv_rows(old)) == len(_csv_rows(full))


def test_resume_refuses_a_file_another_model_or_fit_wrote(tree, tiny_models_dir, tmp_path, capsys):
    """A few rows of a resumed file are scored again: written with another --fit, they differ and the file is
    refused, untouched; with the same settings the run continues it."""
    common = ["--models-dir", tiny_models_dir, "--no-progress"]
    out = tmp_path / "p.csv"
    assert _score(tree, "--out", out, "--fit", "center_crop", *common) == 0
    whole = out.read_text()
    cut = "".join(whole.splitlines(keepends=True)[:5])  # the header and the first rows: 32x32, 24x40, 48x64 images
    out.write_text(cut)
    capsys.readouterr()
    assert _score(tree, "--out", out, "--resume", "--fit", "pad", *common) == 2
    err = capsys.readouterr().err
    assert f"cannot resume {out}: " in err and "it was written with another --model, --fit or model file" in err
    assert out.read_text() == cut
    assert _score(tree, "--out", out, "--resume", "--fit", "center_crop", *common) == 0
    assert out.read_text() == whole


def test_resume_refuses_a_file_written_for_another_folder(tree, image_folder, tiny_models_dir, tmp_path, capsys):
    """Its rows name files of another folder, which the new one does not hold: continuing would mix two folders'
    rows under relative paths, counted as 'already' scored."""
    common = ["--models-dir", tiny_models_dir, "--no-progress"]
    out = tmp_path / "p.csv"
    assert _score(tree / "b", "--out", out, *common) == 0
    kept = out.read_text()
    capsys.readouterr()
    assert _score(image_folder, "--out", out, "--resume", *common) == 2
    err = capsys.readouterr().err
    assert f"cannot resume {out}: none of its " in err and "it was written for another folder" in err, err
    assert out.read_text() == kept
    # a file deleted since (some of the rows' files still there) is no other folder: the run continues
    (tmp_path / "b").mkdir()
    for name in ("anim.gif", "gray.jpg"):
        shutil.copy(tree / "b" / name, tmp_path / "b" / name)
    assert _score(tmp_path / "b", "--out", out, "--resume", *common) == 0


def test_resume_refuses_another_threshold_setting(tmp_path):
    seen = []
    out = tmp_path / "p.csv"
    out.write_text("path,label_1,confidence_1,error\na.png,x,0.900000,\n")
    with pytest.raises(OutputError, match="has no 'confident' column .* rerun without --min-confidence"):
        resume_output(str(out), CsvFormat(1, min_confidence=0.5), seen.append)
    out.write_text("path,label_1,confidence_1,confident,error\na.png,x,0.900000,true,\n")
    assert resume_output(str(out), CsvFormat(1, min_confidence=0.5), seen.append) == 1
    with pytest.raises(OutputError, match="rerun with --min-confidence"):
        resume_output(str(out), CsvFormat(1), seen.append)
    out = tmp_path / "p.jsonl"
    out.write_text('{"path": "a.png", "top_k": [{"label": "x", "index": 0, "confidence": 0.9}], "error": null}\n')
    with pytest.raises(OutputError, match="line 1: it has no 'confident' field"):
        resume_output(str(out), JsonlFormat(1, min_confidence=0.5), seen.append)


def test_labels_from_folders(image_folder, tiny_models_dir, tmp_path, capsys):
    root = tmp_path / "labelled"
    shutil.copytree(image_folder, root)
    (root / "Misc").mkdir()
    shutil.copy(image_folder / "beta" / "0020.png", root / "Misc" / "x.png")
    shutil.copytree(image_folder / "gamma", root / "nested" / "GAMMA")  # matched case-insensitively
    out = tmp_path / "p.jsonl"
    assert (
        _score(root, "--out", out, "--models-dir", tiny_models_dir, "--labels-from-folders", "--no-progress", "--k", 2)
        == 0
    )
    err = capsys.readouterr().err
    records = [json.loads(line) for line in out.read_text().splitlines()]
    truth = {"alpha": "alpha", "beta": "beta", "gamma": "gamma", "GAMMA": "gamma"}
    scored = [
        (truth[PurePosixPath(r["path"]).parent.name], r["top_k"][0]["label"])
        for r in records
        if PurePosixPath(r["path"]).parent.name in truth
    ]
    correct = sum(t == p for t, p in scored)
    assert len(scored) == 80
    assert f"top-1 {100 * correct / 80:.2f}% ({correct}/80), top-2" in err
    for name in ("alpha", "beta", "gamma"):
        assert any(line.split()[:2] == [name, str(40 if name == "gamma" else 20)] for line in err.splitlines())
    if correct < 80:
        assert "most frequent confusions" in err
    assert "'Misc' (1)" in err and "the classes are: alpha, beta, gamma" in err


def test_a_folder_named_in_another_unicode_form_or_case_is_the_same_class():
    import unicodedata

    from service.score.accuracy import FolderAccuracy

    accuracy = FolderAccuracy(["café", "dog"], "photos", "m")
    decomposed = unicodedata.normalize("NFD", "Café")  # a folder copied from macOS, capitalised
    assert decomposed != "Café" and accuracy.label_of(f"{decomposed}/x.jpg") == "café"
    assert accuracy.label_of("DOG/y.jpg") == "dog" and accuracy.label_of("cat/z.jpg") is None


def test_resume_after_kill(image_folder, tiny_models_dir, tmp_path):
    root = tmp_path / "many"
    sources = sorted(image_folder.rglob("*.png"))
    # Enough that a run outlives the polling below by far: an idle 2-core machine scores about 1,300 of these
    # a second, so a resumed run lasts several seconds, not one poll interval.
    for i in range(9600):
        d = root / f"d{i // 500}"
        d.mkdir(parents=True, exist_ok=True)
        (d / f"{i:05d}.png").write_bytes(sources[i % len(sources)].read_bytes())
    (root / "d0" / "00007.png").write_bytes(b"broken")
    out = tmp_path / "preds.csv"
    cmd = [
        *_cli(),
        str(root),
        "--out",
        str(out),
        "--models-dir",
        str(tiny_models_dir),
        "--batch-size",
        "4",
        "--workers",
        "1",
        "--k",
        "1",
    ]
    # Ctrl-C as in a shell: a SIGINT disposition the test process inherited or set (ignored) must not reach the
    # scorer, which would then never see the interrupt (Python installs its handler only over the default).
    kw = dict(
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )

    proc = subprocess.Popen(cmd, **kw)
    wait_for_lines(out, 40, proc)
    workers = _children(proc.pid)  # the decode worker and multiprocessing's resource tracker
    assert workers
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    deadline = time.monotonic() + 20
    while any(map(_running, workers)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(map(_running, workers)), "processes outlived the killed scorer"
    lines = out.read_bytes().count(b"\n")
    assert 40 <= lines < 9600, "the run should have been killed part-way"
    with open(out, "a") as f:
        f.write("d1/00999.png,al")  # as if killed in the middle of a write

    proc = subprocess.Popen(cmd + ["--resume"], **kw)  # interrupted again, politely this time
    wait_for_lines(out, lines + 40, proc)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "interrupted" in err and "--resume" in err and "Traceback" not in err, err
    assert out.read_bytes().endswith(b"\n")

    lines = out.read_bytes().count(b"\n")
    proc = subprocess.Popen(cmd + ["--resume"], **kw)  # and by a scheduler's SIGTERM, which ends it the same way
    wait_for_lines(out, lines + 40, proc)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143 and "SIGTERM: interrupted" in err and "--resume" in err and "Traceback" not in err
    assert out.read_bytes().endswith(b"\n")

    done = subprocess.run(cmd + ["--resume"], **kw, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "already in" in done.stderr and "scored " in done.stderr
    rows = _csv_rows(out)
    expected = _sorted(p.relative_to(root).as_posix() for p in root.rglob("*.png"))
    assert [r["path"] for r in rows] == expected  # every file exactly once, still in order
    assert [r["path"] for r in rows if r["error"]] == ["d0/00007.png"]
    assert all(r["label_1"] in ("alpha", "beta", "gamma") for r in rows if not r["error"])


def test_odd_file_names_round_trip_through_resume_and_the_service(image_folder, tiny_models_dir, tmp_path, monkeypatch):
    """A carriage return in a name (the CSV writer quotes only its own line terminator) and a name that is not
    UTF-8 (which the HTTP client refuses to encode) are rows like any other, locally and with --url. JSON Lines
    escapes the bytes of such a name that do not decode, so that each line stays UTF-8 (a JSON text)."""
    folder = tmp_path / "odd"
    folder.mkdir()
    source = (image_folder / "alpha" / "0000.png").read_bytes()
    names = [b"a.png", b"x\ry.png", b"caf\xe9.png", b"bad\xff\xfe.jpg", b"z.png"]
    for name in names:
        (folder / os.fsdecode(name)).write_bytes(source)
    expected = _sorted(os.fsdecode(n) for n in names)

    def jsonl_rows(path: Path) -> list[dict]:
        return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]  # strict UTF-8

    for out, rows_of in ((tmp_path / "p.csv", _csv_rows), (tmp_path / "p.jsonl", jsonl_rows)):
        assert _score(folder, "--out", out, "--models-dir", tiny_models_dir, "--no-progress") == 0
        rows = rows_of(out)
        assert [r["path"] for r in rows] == expected and not any(r["error"] for r in rows)
        for cut in (5, 2):  # the last rows lost, as after a kill: the odd names among them, then among those kept
            out.write_bytes(out.read_bytes().rsplit(b"\n", cut)[0] + b"\n")
            assert _score(folder, "--out", out, "--resume", "--models-dir", tiny_models_dir, "--no-progress") == 0
            assert [r["path"] for r in rows_of(out)] == expected  # read back whole: nothing scored twice

    handler, _ = _classify_handler()
    mock_service(monkeypatch, handler)
    remote = tmp_path / "remote.csv"
    assert _score(folder, "--url", "http://scorer.test", "--out", remote, "--no-progress") == 0
    rows = _csv_rows(remote)
    assert [r["path"] for r in rows] == expected and not any(r["error"] for r in rows)


def test_output_to_a_pipe_given_as_a_path(tree, tiny_models_dir, tmp_path):
    """--out /dev/stdout piped on: the header is written once, without asking a pipe where it stands."""
    done = subprocess.run(
        [*_cli(), str(tree / "a-b"), "--out", "/dev/stdout", "--format", "csv", "--models-dir", str(tiny_models_dir)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("path,label_1") and [line.split(",")[0] for line in lines[1:]] == ["z.png"]


def test_resume_reads_back_and_rejects_other_k(tmp_path):
    out = tmp_path / "p.jsonl"
    good = '{"path": "a.png", "top_k": [{"label": "x", "index": 0, "confidence": 0.9}], "error": null}\n'
    bad = '{"path": "b.png", "top_k": [], "error": "empty file (0 bytes)"}\n'
    out.write_text(good + bad + '{"path": "c.png", "top')
    seen = []
    assert resume_output(str(out), JsonlFormat(1), seen.append) == 2
    assert out.read_text() == good + bad and [r.path for r in seen] == ["a.png", "b.png"]
    with pytest.raises(OutputError, match="--k 1"):
        resume_output(str(out), JsonlFormat(3), seen.append)
    out = tmp_path / "p.csv"
    out.write_text("path,label_1,confidence_1,error\na.png,x,0.900000,\n")
    with pytest.raises(OutputError, match="rerun with --k 1"):
        resume_output(str(out), CsvFormat(2), seen.append)
    out.write_text("path,lab")  # killed while writing the header: start afresh
    assert resume_output(str(out), CsvFormat(1), seen.append) == 0 and out.read_text() == ""


@pytest.mark.parametrize("fmt", [CsvFormat(2), JsonlFormat(2)], ids=["csv", "jsonl"])
def test_resume_leaves_a_one_line_file_of_another_kind_alone(tmp_path, fmt):
    """A file without a whole line was taken for a run stopped in its first write and emptied, whatever it held."""
    out = tmp_path / f"p.{fmt.name}"
    out.write_text("customer_id,name,total")  # someone else's file, its only line without a newline
    with pytest.raises(OutputError, match="not a score file: it begins 'customer_id,name,total'"):
        resume_output(str(out), fmt, list().append)
    assert out.read_text() == "customer_id,name,total"
    for cut in (1, 5, 12, 40):  # what a run stopped in its first write leaves is still dropped
        out.write_text((fmt.header() + fmt.format([Row("a.png", error="empty file (0 bytes)")]))[:cut])
        assert resume_output(str(out), fmt, list().append) == 0 and out.read_text() == ""


@pytest.mark.parametrize("name", ["csv", "jsonl"])
def test_resume_refuses_a_file_marked_at_another_min_confidence(tmp_path, name):
    """The file said only that it had a 'confident' column, not at which threshold: resumed with another, the
    column mixed the two."""
    written = make_format(name, 1, min_confidence=0.5)
    rows = [Row("a.png", [Prediction("x", 0, 0.7)]), Row("b.png", [Prediction("x", 0, 0.4999997)])]
    out = tmp_path / f"p.{name}"
    out.write_text(written.header() + written.format(rows))  # b.png: 0.500000 in the file, marked false
    assert resume_output(str(out), make_format(name, 1, min_confidence=0.5), list().append) == 2
    assert resume_output(str(out), make_format(name, 1, min_confidence=0.6), list().append) == 2
    for other, what in ((0.8, "confidence 0.7 confident"), (0.45, "confidence 0.5 not confident")):
        with pytest.raises(OutputError, match=f"marks {what}, which --min-confidence {other:g} does not"):
            resume_output(str(out), make_format(name, 1, min_confidence=other), list().append)
    assert out.read_text() == written.header() + written.format(rows)


def _classify_handler(fail_first: int = 0, max_images: int = 64, max_body: int | None = None, says_limits=False):
    """A stand-in for the service's GET /models and POST /classify, with its 4xx answers; ``says_limits``: its
    GET /models lists the limits, as the service does."""
    calls = {"requests": 0, "sizes": [], "too_large": 0}

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/readyz":
            return httpx.Response(200, json={"status": "ready"})
        if request.url.path == "/models":
            listing = ModelList(
                default="fake",
                models=[
                    ModelInfo(
                        name="fake",
                        dataset="folder",
                        arch="resnet9",
                        classes=["alpha", "beta", "gamma"],
                        precision="fp32",
                        accuracy=None,
                        input_size=[32, 32],
                        fit="center_crop",
                        default=True,
                    )
                ],
                limits=Limits(max_images=max_images, max_body_bytes=max_body or 2**25, max_pixels=10**6)
                if says_limits
                else None,
            )
            return httpx.Response(200, json=listing.model_dump(mode="json"))
        body = request.read()
        if KEY_CHECK_NAME.encode() in body:  # the scorer's key check before the run: answered, not counted
            return httpx.Response(200, json={"model": "fake", "predictions": []})
        calls["requests"] += 1
        if max_body is not None and len(body) > max_body:
            calls["too_large"] += 1
            return httpx.Response(413, json={"error": "request body too large", "reason": "body_too_large"})
        if calls["requests"] <= fail_first:
            return httpx.Response(503, json={"error": "warming up", "reason": "overloaded"})
        message = email.message_from_bytes(
            b"Content-Type: " + request.headers["content-type"].encode() + b"\r\n\r\n" + body,
            policy=email.policy.default,
        )
        fields = {part.get_param("name", header="content-disposition"): part for part in message.iter_parts()}
        images = [p for p in message.iter_parts() if p.get_param("name", header="content-disposition") == "images"]
        if len(images) > max_images:
            return httpx.Response(
                400, json={"error": f"too many images: at most {max_images}", "reason": "too_many_images"}
            )
        k = int(fields["k"].get_content())
        calls["sizes"].append(len(images))
        predictions = []
        for part in images:
            try:
                pixels = decode_image(part.get_payload(decode=True), fit="center_crop")
            except ValueError as exc:
                return httpx.Response(400, json={"error": f"{part.get_filename()}: {exc}", "reason": "not_an_image"})
            label = int(pixels.mean()) % 3
            top = [(label + j) % 3 for j in range(k)]
            predictions.append(
                {
                    "filename": part.get_filename(),
                    "top_k": [
                        {"label": ["alpha", "beta", "gamma"][c], "index": c, "confidence": 0.5 / (j + 1)}
                        for j, c in enumerate(top)
                    ],
                }
            )
        return httpx.Response(200, json={"model": "fake", "predictions": predictions})

    return handler, calls


def test_url_mode_splits_and_falls_back_to_single_images(tree, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(RemoteBackend, "RETRY_DELAY", 0.001)
    handler, calls = _classify_handler(fail_first=1, max_images=5)
    mock_service(monkeypatch, handler)
    out = tmp_path / "p.csv"
    assert _score(tree, "--url", "http://scorer.test", "--out", out, "--k", 9, "--batch-size", 20, "--no-progress") == 0
    rows = _csv_rows(out)
    assert list(rows[0])[-3:] == ["label_3", "confidence_3", "error"]  # k capped at the service's 3 classes
    assert [r["path"] for r in rows] == _sorted(GOOD + list(BAD))
    errors = {r["path"]: r["error"] for r in rows if r["error"]}
    assert set(errors) == set(BAD) and "broken symlink" in errors["bad/broken.webp"]
    assert "not a readable image" in errors["bad/corrupt.jpg"] and "corrupt.jpg" in errors["bad/corrupt.jpg"]
    for r in rows:
        if not r["error"]:
            pixels = decode_image((tree / r["path"]).read_bytes(), fit="center_crop")
            assert r["label_1"] == ["alpha", "beta", "gamma"][int(pixels.mean()) % 3]
    # A 503 retried; 12 files halved to requests within the limit of 5; only the requests
    # holding a broken file were resent image by image.
    assert max(calls["sizes"]) <= 5 and 0 < calls["sizes"].count(1) < 12
    assert "scored 9, failed 4" in capsys.readouterr().err

    assert _score(tree, "--url", "http://scorer.test", "--model", "nope", "--no-progress") == 2
    assert "unknown model 'nope'; the service at http://scorer.test has: fake" in capsys.readouterr().err

    handler, _ = _classify_handler(fail_first=10**6)
    mock_service(monkeypatch, handler)
    assert _score(tree, "--url", "http://scorer.test", "--out", out, "--overwrite", "--no-progress") == 1
    assert "failed 6 times: HTTP 503: warming up" in capsys.readouterr().err


def test_a_service_that_stops_answering_says_what_the_output_holds(tree, tmp_path, monkeypatch, capfd):
    """Every such stop advised --resume: refused for standard output, and after an --overwrite that had not yet
    replaced the file, it would have kept the very rows being replaced."""
    handler, _ = _classify_handler(fail_first=10**6)
    mock_service(monkeypatch, handler)
    monkeypatch.setattr(RemoteBackend, "RETRY_DELAY", 0.001)
    url = ["--url", "http://scorer.test", "--no-progress"]
    old = tmp_path / "old.csv"
    old.write_text("path,label_1,confidence_1,error\na.png,alpha,0.900000,\n")
    cases = {
        (): "",
        ("--out", old, "--overwrite"): f"{old} is as it was: it is replaced only once the new rows begin",
        ("--out", tmp_path / "new.csv"): f"the rows so far are in {tmp_path / 'new.csv'}: rerun with --resume",
    }
    for args, hint in cases.items():
        assert _score(tree, *url, *args) == 1
        err = capfd.readouterr().err
        assert "failed 6 times: HTTP 503: warming up" in err and "stopped: scored 0" in err, err
        assert ("--resume" in err) == ("--resume" in hint) and hint in err, err
    assert old.read_text() == "path,label_1,confidence_1,error\na.png,alpha,0.900000,\n"


def test_url_mode_sizes_its_requests_to_the_limits_the_service_lists(tmp_path, monkeypatch):
    """GET /models says how many images and bytes a request may hold: no request is refused for its size."""
    from service.score.remote import FORM_OVERHEAD, PART_OVERHEAD

    folder = tmp_path / "noise"
    folder.mkdir()
    for i in range(8):  # noise does not compress: files of one size, larger than the overheads
        Image.fromarray(_rgb(64, 64, i)).save(folder / f"{i}.png")
    size = max(p.stat().st_size for p in folder.iterdir())
    limit = FORM_OVERHEAD + 2 * (size + PART_OVERHEAD)  # two files a request, by the client's own reckoning
    for says in (False, True):
        handler, calls = _classify_handler(max_images=3, max_body=limit, says_limits=says)
        mock_service(monkeypatch, handler)
        out = tmp_path / f"p{says}.csv"
        assert _score(folder, "--url", "http://scorer.test", "--out", out, "--batch-size", 8, "--no-progress") == 0
        rows = _csv_rows(out)
        assert len(rows) == 8 and not any(r["error"] for r in rows)
        if says:
            assert calls["too_large"] == 0 and sorted(calls["sizes"]) == [2, 2, 2, 2], calls
        else:  # three at a time, as many as it may send, refused for their bytes: learnt from the refusals
            assert calls["too_large"] > 0, calls


def test_url_mode_file_over_the_body_limit_is_a_row_about_the_file(tmp_path, monkeypatch):
    """A file larger than the service takes in a request is an error row that says the file's size, not the
    request's; where GET /models gave the limit it is not uploaded at all."""
    folder = tmp_path / "mixed"
    folder.mkdir()
    Image.fromarray(_rgb(16, 16, 1)).save(folder / "small.png")
    Image.fromarray(_rgb(256, 256, 2)).save(folder / "big.png")
    big = (folder / "big.png").stat().st_size
    limit = big // 2
    for says in (False, True):
        handler, calls = _classify_handler(max_images=3, max_body=limit, says_limits=says)
        mock_service(monkeypatch, handler)
        out = tmp_path / f"big{says}.csv"
        assert _score(folder, "--url", "http://scorer.test", "--out", out, "--no-progress") == 0
        rows = {r["path"]: r for r in _csv_rows(out)}
        assert rows["small.png"]["error"] == "" and rows["small.png"]["label_1"], rows
        error = rows["big.png"]["error"]
        assert error.startswith(f"file is {big} bytes, too large for the service"), error
        if says:  # never sent
            assert error.endswith(f"its requests are limited to {limit} bytes") and calls["too_large"] == 0, calls
        else:  # sent (the pair, then it alone), refused, and the service's words kept
            assert error.endswith("request body too large") and calls["too_large"] == 2, calls


@pytest.mark.slow
def test_url_mode_against_live_service(tree, tiny_models_dir, tmp_path):
    with running_service(tiny_models_dir, tmp_path / "serve.log") as url:
        local, remote = tmp_path / "local.jsonl", tmp_path / "remote.jsonl"
        common = ["--k", "2", "--no-progress", "--batch-size", "5"]
        assert _score(tree, "--out", local, "--models-dir", tiny_models_dir, *common) == 0
        done = subprocess.run(
            [*_cli(), str(tree), "--out", str(remote), "--url", url, "--model", "tiny", *common],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr
        local_rows = [json.loads(line) for line in local.read_text().splitlines()]
        remote_rows = [json.loads(line) for line in remote.read_text().splitlines()]
        assert [r["path"] for r in remote_rows] == [r["path"] for r in local_rows]
        for lr, rr in zip(local_rows, remote_rows):
            assert rr["error"] == lr["error"], (lr, rr)  # worded alike, not "images[0] ('name'): ..."
            if lr["error"] is None:
                assert [t["label"] for t in rr["top_k"]] == [t["label"] for t in lr["top_k"]]
                assert abs(rr["top_k"][0]["confidence"] - lr["top_k"][0]["confidence"]) < 1e-4
        assert f"scored {len(GOOD)}, failed {len(BAD)}" in done.stderr


def test_url_mode_marks_with_min_confidence_locally(tree, tmp_path, monkeypatch):
    """The threshold is applied to the confidences the service returns (the stand-in's top-1 is 0.5)."""
    handler, _ = _classify_handler()
    mock_service(monkeypatch, handler)
    for threshold, expected in (("0.5", "true"), ("0.6", "false")):
        out = tmp_path / f"{threshold}.csv"
        assert (
            _score(
                tree,
                "--url",
                "http://scorer.test",
                "--out",
                out,
                "--k",
                1,
                "--min-confidence",
                threshold,
                "--no-progress",
            )
            == 0
        )
        assert {r["confident"] for r in _csv_rows(out) if not r["error"]} == {expected}


# ---------------------------------------------------------------------------------------------- --fit
def _top1_confidences(path: Path) -> dict[str, float]:
    return {r["path"]: float(r["confidence_1"]) for r in _csv_rows(path) if not r["error"]}


def test_fit_reaches_the_decoders_and_defaults_to_the_models(tree, tiny_models_dir, tmp_path):
    clf = OnnxClassifier(tiny_models_dir / "tiny.onnx", device="cpu")
    assert clf.card.input.fit == "center_crop"
    scored = {}
    for fit in (None, "squash", "pad"):
        out = tmp_path / f"{fit}.csv"
        args = [tree, "--out", out, "--models-dir", tiny_models_dir, "--workers", 1, "--no-progress"]
        assert _score(*args, *(["--fit", fit] if fit else [])) == 0
        scored[fit] = _top1_confidences(out)
        expected = clf.probabilities(
            to_model_input([decode_image((tree / p).read_bytes(), fit=fit or "center_crop") for p in GOOD])
        ).max(axis=1)
        for path, p in zip(GOOD, expected):
            assert abs(scored[fit][path] - p) < 2e-6, (fit, path)
    wide = "UPPER.JPG"  # 40x24: the three fits see different pixels
    assert len({scored[fit][wide] for fit in scored}) == 3
    assert scored["pad"]["b/gray.jpg"] == scored[None]["b/gray.jpg"]  # 32x32: no fit changes it


def test_fit_is_sent_to_the_service_and_a_bad_one_is_a_usage_error(tree, tmp_path, monkeypatch, capsys):
    handler, _ = _classify_handler()
    sent = []

    def recording(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/classify":
            sent.append(b'name="fit"\r\n\r\npad\r\n' in request.read())
        return handler(request)

    mock_service(monkeypatch, recording)
    out = tmp_path / "p.csv"
    assert _score(tree, "--url", "http://scorer.test", "--out", out, "--fit", "pad", "--no-progress") == 0
    assert sent and all(sent)
    with pytest.raises(SystemExit) as exit_info:
        _score(tree, "--out", out, "--fit", "stretch")
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "argument --fit: invalid choice: 'stretch'" in err and "center_crop" in err


@pytest.mark.parametrize("name", ["plain.jpg", 'a"quote.jpg', "it's.jpg", "both'\".jpg", "x): y.jpg", "a%22b.jpg"])
def test_a_refusal_row_reads_as_the_local_engines_whatever_name_the_service_quotes(name):
    """The service names a refused image by the file name it received, which can differ from the one sent (a
    client may percent-encode a quote): the remote row drops that naming, whatever the name holds."""
    from service.score.remote_answers import _row_error
    from service.uploads import Upload, decode_upload

    for data, local in ((b"", "empty file (0 bytes)"), (b"these are not pixels", "not a readable image")):
        refusal = decode_upload(0, Upload(name, data), (32, 32), 10**6, "center_crop")
        assert refusal.message.startswith(f"images[0] ({name!r})")
        assert _row_error(refusal.message).startswith(local), refusal.message


def test_ctrl_c_while_the_command_line_loads_is_an_interrupt_without_a_traceback(monkeypatch, capsys):
    """The imports behind the parser take most of a second: Ctrl-C there was a KeyboardInterrupt traceback."""
    import service.score.cli
    from service.__main__ import main as service_main

    def interrupted(sub):
        raise KeyboardInterrupt

    monkeypatch.setattr(service.score.cli, "add_score_parser", interrupted)
    assert service_main(["score", "anywhere"]) == 130
    assert capsys.readouterr().err == "interrupted\n"


def test_ctrl_c_inside_onnx_runtimes_import_is_an_interrupt_too(monkeypatch, capsys):
    """ONNX Runtime's native module turns a Ctrl-C during its import into ``ImportError: initialization failed``
    (the interrupt as its cause): that was a traceback and status 1. Any other ImportError is still raised."""
    import service.score.cli
    from service.__main__ import main as service_main

    def interrupted(sub):
        try:
            raise KeyboardInterrupt
        except KeyboardInterrupt as exc:
            raise ImportError("initialization failed") from exc

    monkeypatch.setattr(service.score.cli, "add_score_parser", interrupted)
    assert service_main(["score", "anywhere"]) == 130
    assert capsys.readouterr().err == "interrupted\n"

    def missing(sub):
        raise ImportError("no module named something")

    monkeypatch.setattr(service.score.cli, "add_score_parser", missing)
    with pytest.raises(ImportError, match="something"):
        service_main(["score", "anywhere"])


@pytest.mark.parametrize(
    "command, after",
    [
        (["service.score"], "numpy"),  # python -m service.score had no guard at all while it imported
        (["service.score"], "onnxruntime.capi._ld_preload"),  # the next import is ONNX Runtime's native module
        (["service", "score"], "onnxruntime.capi._ld_preload"),
    ],
)
def test_ctrl_c_while_the_command_imports(tmp_path, command, after):
    """A real SIGINT, sent as soon as -X importtime reports that ``after`` is imported: the rest of the imports
    (ONNX Runtime's native module takes some 30 ms, then most of a second more) are still to come."""
    Image.new("RGB", (32, 32), "red").save(tmp_path / "a.png")
    proc = subprocess.Popen(
        [sys.executable, "-X", "importtime", "-m", *command, str(tmp_path), "--out", os.devnull, "--format", "csv"],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    for line in proc.stderr:
        if line.rsplit("|", 1)[-1].strip() == after:
            time.sleep(0.01)  # into the native module's initialisation, where the interrupt became an ImportError
            proc.send_signal(signal.SIGINT)
            break
    err = [line for line in proc.communicate(timeout=60)[1].splitlines() if not line.startswith("import time:")]
    # A process that ends itself by SIGINT (as Python may, once a native module saw the interrupt) is also 130 to
    # the shell; what matters is the one line, without a traceback.
    assert proc.returncode in (130, -signal.SIGINT) and err == ["interrupted"], (proc.returncode, err)


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
def test_a_write_that_fails_on_a_device_advises_no_resume(tree, monkeypatch, capfd):
    """--out /dev/full (JSON Lines: no header to fail first) or a pipe: the summary advised --resume, which
    refuses anything but a regular file."""
    handler, _ = _classify_handler()
    mock_service(monkeypatch, handler)
    assert (
        _score(tree, "--url", "http://scorer.test", "--out", "/dev/full", "--format", "jsonl", "--no-progress")
        == OUTPUT_LOST
    )
    err = capfd.readouterr().err
    assert "error: cannot write /dev/full: No space left on device" in err and "stopped: scored 0" in err, err
    assert "the rows so far went to /dev/full, which --resume cannot read back: rerun to score all" in err, err
    assert "rerun with --resume" not in err, err


def test_resume_starts_a_header_only_file_again_whatever_its_k_or_threshold(tree, tmp_path, monkeypatch, capsys):
    """A run stopped before its first row leaves only the CSV header: resumed with another --k or
    --min-confidence it was refused ("rerun with --k 1"), though it held no row to keep or to mix with."""
    out = tmp_path / "p.csv"
    other_k, other_threshold = "path,label_1,confidence_1,error\n", CsvFormat(2, min_confidence=0.5).header()
    for header in (other_k, other_threshold):
        out.write_text(header)
        assert resume_output(str(out), CsvFormat(2), list().append) == 0 and out.read_text() == ""

    handler, _ = _classify_handler()
    mock_service(monkeypatch, handler)
    out.write_text("path,label_1,confidence_1,error\n")
    assert _score(tree, "--url", "http://scorer.test", "--out", out, "--k", 2, "--resume", "--no-progress") == 0
    rows = _csv_rows(out)
    assert list(rows[0]) == ["path", "label_1", "confidence_1", "label_2", "confidence_2", "error"]
    assert [r["path"] for r in rows] == _sorted(GOOD + list(BAD))
    assert "already in" not in capsys.readouterr().err


def test_walk_leaves_out_hidden_files_and_folders_under_the_folder_named_as_training_does(tmp_path):
    """A viewer's .thumbnails/ (copies of the photos), a hidden file, a Mac's ._ copy: not scored, as training's
    folder reader does not read them (tests/test_folder_data.py compares the two). The folder named on the command
    line is walked, hidden or not: the user asked for it."""
    from service.score.walk import WalkStats, count_images, walk

    root = tmp_path / ".photos"
    for name in ("cat/0.png", "cat/.1.png", "cat/._0.png", ".thumbnails/0.png", "cat/.git/x.png", "notes.txt"):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(b"not read by the walk")
    stats = WalkStats()
    assert [entry.rel for entry in walk(root, stats)] == ["cat/0.png"]
    assert stats.skipped == 3  # .1.png, ._0.png, notes.txt: counted as files not scored
    assert stats.hidden_dirs_skipped == [".thumbnails", "cat/.git"]
    assert count_images(root) == 1


def test_the_summary_names_the_hidden_folders_it_did_not_enter(image_folder, tiny_models_dir, tmp_path, capsys):
    """A folder whose images are all under a hidden folder is no longer walked into it; the refusal and the
    summary say where the images the user may have expected are, rather than only 'no image files'."""
    only_hidden = tmp_path / "only-hidden"
    (only_hidden / ".thumbnails").mkdir(parents=True)
    shutil.copy(image_folder / "alpha" / "0000.png", only_hidden / ".thumbnails" / "0000.png")
    assert _score(only_hidden, "--models-dir", tiny_models_dir, "--no-progress", "--out", tmp_path / "a.csv") == 2
    err = capsys.readouterr().err
    assert "not entered: .thumbnails/: hidden, as training's folder reader leaves them" in err, err

    mixed = tmp_path / "mixed"
    mixed.mkdir()
    shutil.copy(image_folder / "alpha" / "0000.png", mixed / "0000.png")
    for i in range(7):
        (mixed / f".cache{i}").mkdir()
    assert _score(mixed, "--models-dir", tiny_models_dir, "--no-progress", "--out", tmp_path / "b.csv") == 0
    err = capsys.readouterr().err
    assert "(not images, or hidden)" in err and "not entered: .cache0/, .cache1/, .cache2/, .cache3/, " in err, err
    assert ".cache4/ and 2 more: hidden" in err, err


def test_resume_compares_rows_scored_again_by_path_whatever_order_the_engine_gives(tmp_path):
    """--resume scores a few kept rows again and refuses a file of another model's rows; an engine that gives a
    chunk's rows in another order than its entries (as Ray's batches may) was compared row against wrong row."""
    import argparse

    from service.score.errors import UserError
    from service.score.resume import check_same_scoring
    from service.score.sinks import Prediction, Row

    for name in ("a.png", "b.png", "c.png"):
        (tmp_path / name).write_bytes(b"")
    labels = {"a.png": "cat", "b.png": "dog", "c.png": "ship"}

    class Reversing:
        batch_size, k, name, classes = 8, 1, "m", None
        change: dict = {}

        def rows(self, chunks):
            for chunk in chunks:
                yield [Row(e.rel, [Prediction(self.change.get(e.rel, labels[e.rel]), 0, 0.9)]) for e in reversed(chunk)]

    written = [Row(name, [Prediction(label, 0, 0.9)]) for name, label in labels.items()]
    args = argparse.Namespace(dir=str(tmp_path), out="x.csv")
    check_same_scoring(Reversing(), args, written)  # the same scores, another order: resumed
    other = Reversing()
    other.change = {"b.png": "frog"}
    with pytest.raises(UserError, match="1 of 3 of its rows scored again differ \\('b.png': dog 0.9000 there, frog"):
        check_same_scoring(other, args, written)


@pytest.fixture
def no_engine_opens(monkeypatch):
    """Every engine (local, ray) loads its model through chosen_model first: a refusal must come before it."""
    from service.score import engines

    def opened(*args, **kwargs):
        raise AssertionError("an engine was opened before the refusal")

    monkeypatch.setattr(engines, "chosen_model", opened)


@pytest.mark.parametrize("engine", ["local", "ray"])
def test_an_output_that_cannot_be_written_is_refused_before_any_engine_opens(engine, tmp_path, no_engine_opens, capsys):
    """Found only when the output was opened, after the engine had started: Ray spun up for seconds first. Each
    case is refused in one line, exit 2, by both engines alike, and leaves no file behind."""
    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "0.png").write_bytes(b"")  # the walk goes by the name
    read_only = tmp_path / "read-only"
    read_only.mkdir()
    a_file = tmp_path / "a-file"
    a_file.write_text("")
    cases = {
        read_only / "missing" / "p.csv": f"folder {read_only / 'missing'} does not exist",
        a_file / "p.csv": f"{a_file} is a file, not a folder",
    }
    if Path("/proc/self").is_dir():
        # permission bits would allow it, and as root they always do: procfs creates no file, whoever asks
        cases[Path("/proc/score-output.csv")] = "No such file or directory"
    read_only.chmod(0o555)
    try:
        for out, reason in cases.items():
            assert _score(photos, "--engine", engine, "--out", out, "--no-progress") == 2, out
            assert capsys.readouterr().err == f"error: cannot write {out}: {reason}\n"
            assert not out.exists()
    finally:
        read_only.chmod(0o755)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file", "photos", "read-only"]  # the probe left nothing
    assert not list(read_only.iterdir())


@pytest.mark.parametrize("engine", ["local", "ray"])
def test_a_folder_without_images_is_refused_before_any_engine_opens(engine, tmp_path, no_engine_opens, capsys):
    """The walk's first image was looked for after the engine had loaded its model (Ray: started a cluster)."""
    empty = tmp_path / "empty"
    empty.mkdir()
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "readme.txt").write_text("no image here")
    out = tmp_path / "out" / "p.csv"
    out.parent.mkdir()
    for folder, skipped in ((empty, "0 other files"), (notes, "1 other file")):
        assert _score(folder, "--engine", engine, "--out", out, "--no-progress") == 2, folder
        err = capsys.readouterr().err
        assert err.startswith(f"error: no image files under {folder} ({skipped} skipped;"), err
        assert err.count("\n") == 1, err
    assert not list(out.parent.iterdir())


def test_url_mode_waits_for_a_service_still_loading_its_models(tree, tmp_path, monkeypatch, capsys):
    """A service answers GET /readyz 503 while its workers load (it used to leave the probe hanging); a scorer
    started beside it refused at once ("not ready") where it should wait, up to --timeout."""
    classify, _ = _classify_handler()
    polls = {"left": 3}

    def loading(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/readyz" and polls["left"] > 0:
            polls["left"] -= 1
            return httpx.Response(503, text="not ready")
        return classify(request)

    mock_service(monkeypatch, loading)
    monkeypatch.setattr(RemoteBackend, "READY_POLL_S", 0.01)
    url = ["--url", "http://scorer.test", "--no-progress"]
    assert _score(tree / "a-b", *url, "--out", tmp_path / "a.csv") == 0
    assert polls["left"] == 0
    assert "waiting for the service at http://scorer.test to be ready" in capsys.readouterr().err
    polls["left"] = 10**6  # never ready: given up after --timeout
    assert _score(tree / "a-b", *url, "--timeout", 0.2, "--out", tmp_path / "b.csv") == 2
    assert "is not ready after 0.2 s (--timeout): GET /readyz answered 503" in capsys.readouterr().err

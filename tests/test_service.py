"""The HTTP service, end to end: one real server (python -m service serve) on a free port for the module.

Images are real CIFAR-10 JPEGs read from the shared archive into a temporary folder, plus images made
here in every mode the service must accept or refuse. Limits are set low on this server so that the
refusals are cheap to provoke.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from conftest import ROOT, extract_jpegs, free_port, open_page, running_service

MAX_IMAGES = 8
MAX_BODY = 600_000
MAX_PIXELS = 1_000_000
TINY_CLASSES = ["alpha", "beta", "gamma"]


class Server(str):
    """The base URL, with the server's log file and its BENTOML_HOME."""

    log: Path
    bentoml_home: Path


@pytest.fixture(scope="module")
def server(tiny_models_dir, tmp_path_factory):
    log_path = tmp_path_factory.mktemp("server") / "server.log"
    home = tmp_path_factory.mktemp("bentoml_home")
    env = {**os.environ, "BENTOML_HOME": str(home), "BENTOML_DO_NOT_TRACK": "true"}
    with running_service(
        tiny_models_dir,
        log_path,
        "--max-images",
        str(MAX_IMAGES),
        "--max-body-bytes",
        str(MAX_BODY),
        "--max-pixels",
        str(MAX_PIXELS),
        "--threads",
        "1",
        "--decode-threads",
        "1",
        env=env,
    ) as base:
        url = Server(base)
        url.log, url.bentoml_home = log_path, home
        yield url


@pytest.fixture(scope="module")
def jpegs(shared_archive, tmp_path_factory) -> list[Path]:
    """Twelve real CIFAR-10 JPEGs (several classes), extracted into a temporary folder."""
    return extract_jpegs(shared_archive, tmp_path_factory.mktemp("jpegs"))


def _files(paths: list[Path]) -> list[tuple[str, tuple[str, bytes, str]]]:
    return [("images", (p.name, p.read_bytes(), "image/jpeg")) for p in paths]


def _post(url, files, data=None, **kwargs) -> httpx.Response:
    return httpx.post(f"{url}/classify", files=files, data=data, timeout=30, **kwargs)


def _metrics(url) -> str:
    return httpx.get(f"{url}/metrics", timeout=10).text


def _metric(text: str, name: str, **labels) -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            if all(f'{k}="{v}"' in line for k, v in labels.items()):
                total += float(line.rsplit(" ", 1)[1])
    return total


def _image_bytes(image: Image.Image, fmt: str, **save) -> bytes:
    buf = io.BytesIO()
    image.save(buf, fmt, **save)
    return buf.getvalue()


# ---------------------------------------------------------------------------------------------- imports
def test_import_loads_neither_torch_nor_training():
    code = (
        "import sys, inference, service, service.service\n"
        "bad = [m for m in ('torch', 'training', 'export') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]


# ---------------------------------------------------------------------------------------------- health and models
def test_ready_live_and_models(server, tiny_models_dir):
    assert httpx.get(f"{server}/readyz").status_code == 200
    assert httpx.get(f"{server}/livez").status_code == 200
    listed = httpx.get(f"{server}/models").json()
    assert listed == httpx.post(f"{server}/models", json={}).json()
    assert listed["default"] == "tiny"
    by_name = {m["name"]: m for m in listed["models"]}
    assert set(by_name) == {"tiny", "tiny-int8"}
    assert by_name["tiny"]["default"] and not by_name["tiny-int8"]["default"]
    # no per-device default in this manifest: `default` on every host, and the answer says so and where it runs
    assert (
        listed["device"] == "cpu" and listed["default_reason"] == "the manifest's default (it names none for cpu hosts)"
    )
    assert by_name["tiny"]["default_for"] == ["cpu", "cuda"] and by_name["tiny-int8"]["default_for"] == []
    assert all(m["provider"] == "CPUExecutionProvider" and m["fallback"] is None for m in listed["models"])
    log = server.log.read_text()
    assert "model tiny-int8: every node on CPUExecutionProvider" in log  # the start-up line naming the provider
    assert "ready: worker 1 of 1 on the CPU" in log
    assert by_name["tiny"]["precision"] == "fp32" and by_name["tiny-int8"]["precision"] == "int8"
    manifest = json.loads((tiny_models_dir / "manifest.json").read_text())
    for entry in manifest["models"]:
        info = by_name[entry["name"]]
        assert info["classes"] == TINY_CLASSES == entry["classes"]
        assert info["dataset"] == entry["dataset"] and info["accuracy"] == entry["metrics"]["val_top1"]
        assert info["fit"] == entry["input"]["fit"] == "center_crop"  # a new export's default


def test_post_models_refuses_a_body_it_does_not_take_in_the_contracts_shape(server):
    """POST /models takes no parameters: a body that does not parse, or names a field, is the contract's 400
    (error and reason, counted), not BentoML's own {"error", "detail"}; an empty body or {} lists the models."""
    assert httpx.post(f"{server}/models").status_code == 200
    assert httpx.post(f"{server}/models", content=b"{}", headers={"content-type": "application/json"}).is_success
    for body in (b"{not json", b'{"model": "tiny"}', b"[1, 2]"):
        answer = httpx.post(f"{server}/models", content=body, headers={"content-type": "application/json"})
        assert answer.status_code == 400, (body, answer.text)
        assert set(answer.json()) == {"error", "reason"} and answer.json()["reason"] == "malformed_request", answer.text
    huge = httpx.post(f"{server}/models", content=b" " * 5000, headers={"content-type": "application/json"})
    assert huge.status_code == 413 and huge.json()["reason"] == "body_too_large", huge.text
    # a body of another kind is refused as /infer refuses it (it was a 400 "Invalid JSON")
    text = httpx.post(f"{server}/models", content=b"hi", headers={"content-type": "text/plain"})
    assert text.status_code == 415 and text.json()["reason"] == "unsupported_media_type", text.text
    spec = httpx.get(f"{server}/docs.json").json()["paths"]["/models"]
    for status in ("400", "413", "415"):
        schema = spec["post"]["responses"][status]["content"]["application/json"]["schema"]
        assert schema == {"$ref": "#/components/schemas/ClassifyError"}, status
    assert "400" not in spec["get"]["responses"] and "200" in spec["get"]["responses"]  # GET takes no body


# ---------------------------------------------------------------------------------------------- predictions
def test_classify_top_k_in_order_with_filenames(server, jpegs):
    sent = jpegs[:5]
    response = _post(server, _files(sent), data={"k": "2"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model"] == "tiny"
    assert [p["filename"] for p in body["predictions"]] == [p.name for p in sent]
    for prediction in body["predictions"]:
        top = prediction["top_k"]
        assert len(top) == 2
        confidences = [t["confidence"] for t in top]
        assert confidences == sorted(confidences, reverse=True) and all(0 <= c <= 1 for c in confidences)
        assert all(TINY_CLASSES[t["index"]] == t["label"] for t in top)
        assert len({t["index"] for t in top}) == 2


def test_default_k_is_all_classes_of_a_small_model_and_probabilities_sum_to_one(server, jpegs):
    response = _post(server, _files(jpegs[:1]))
    assert response.status_code == 200, response.text
    top = response.json()["predictions"][0]["top_k"]
    assert [t["label"] for t in top] != [] and len(top) == 3  # default 5, capped at the model's 3 classes
    assert sum(t["confidence"] for t in top) == pytest.approx(1.0, abs=1e-6)


def test_fit_is_the_models_unless_the_request_names_another(server, jpegs):
    """A wide photo is answered as its fitted 32x32 thumbnail would be: the model's own fit (center_crop for
    the tiny models) without a ``fit`` field, the request's with one."""
    from inference.fits import FITS, fit_image

    cifar = Image.open(jpegs[0]).convert("RGB")
    wide = cifar.resize((128, 96), Image.Resampling.BICUBIC)  # 4:3; still fits within the body limit
    wide_png = _image_bytes(wide, "PNG")

    def confidences(data: bytes, name: str, fields: dict | None = None) -> list[float]:
        response = _post(server, [("images", (name, data, "image/png"))], data=fields)
        assert response.status_code == 200, response.text
        return [t["confidence"] for t in response.json()["predictions"][0]["top_k"]]

    answers = {}
    for fit in FITS:
        thumbnail = _image_bytes(fit_image(wide, (32, 32), fit), "PNG")
        answers[fit] = confidences(wide_png, "wide.png", {"fit": fit})
        assert answers[fit] == confidences(thumbnail, "thumb.png"), fit  # 32x32: every fit leaves it alone
    assert confidences(wide_png, "wide.png") == answers["center_crop"]
    assert answers["squash"] != answers["center_crop"] != answers["pad"]


def test_an_empty_form_field_means_not_given_for_every_optional_field(server, jpegs):
    """A browser form sends an input left blank as an empty field: the default, whichever field it is."""
    plain = _post(server, _files(jpegs[:1]))
    blank = _post(server, _files(jpegs[:1]), {"k": "", "model": "", "min_confidence": "", "fit": ""})
    assert plain.status_code == blank.status_code == 200, blank.text
    assert blank.json() == plain.json() and "confident" not in blank.json()["predictions"][0]


def test_named_model_and_k_as_json(server, jpegs):
    # The OpenAPI document declares the non-file fields as JSON: '"tiny-int8"' and '3' must work too.
    for model in ("tiny-int8", '"tiny-int8"'):
        response = _post(server, _files(jpegs[:2]), data={"model": model, "k": "3"})
        assert response.status_code == 200, response.text
        assert response.json()["model"] == "tiny-int8"
        assert all(len(p["top_k"]) == 3 for p in response.json()["predictions"])


def test_min_confidence_marks_predictions_and_leaves_none_out(server, jpegs):
    sent = jpegs[:MAX_IMAGES]
    plain = _post(server, _files(sent), data={"k": "2"})
    assert plain.status_code == 200, plain.text
    assert all("confident" not in p for p in plain.json()["predictions"])  # no threshold: the shape of before
    top1 = [p["top_k"][0]["confidence"] for p in plain.json()["predictions"]]
    threshold = float(np.median(top1))
    for given in (str(threshold), json.dumps(threshold)):
        marked = _post(server, _files(sent), data={"k": "2", "min_confidence": given})
        assert marked.status_code == 200, marked.text
        predictions = marked.json()["predictions"]
        assert [p["filename"] for p in predictions] == [p.name for p in sent]  # every image, in order
        assert [[t["label"] for t in p["top_k"]] for p in predictions] == [
            [t["label"] for t in p["top_k"]] for p in plain.json()["predictions"]
        ]
        assert [p["top_k"][0]["confidence"] for p in predictions] == pytest.approx(top1, abs=1e-6)
        assert [p["confident"] for p in predictions] == [c >= threshold for c in top1]
        assert 0 < sum(p["confident"] for p in predictions) < len(sent)
    for given, expected in (("0", True), ("1", False)):
        response = _post(server, _files(jpegs[:3]), data={"min_confidence": given})
        assert [p["confident"] for p in response.json()["predictions"]] == [expected] * 3
    absent = _post(server, _files(jpegs[:1]), data={"min_confidence": "null"})  # JSON null: not given
    assert absent.status_code == 200 and "confident" not in absent.json()["predictions"][0]


def test_image_modes_and_sizes_are_converted(server):
    rng = np.random.default_rng(0)
    rgb = Image.fromarray(rng.integers(0, 255, (48, 40, 3), dtype=np.uint8))
    rotated = _image_bytes(rgb, "JPEG", exif=_orientation_exif(6))
    cases = {
        "gray_small.webp": _image_bytes(rgb.convert("L").resize((8, 8)), "WEBP"),
        "rgba.png": _image_bytes(rgb.convert("RGBA"), "PNG"),
        "palette.gif": _image_bytes(rgb.convert("P"), "GIF"),
        "cmyk.jpg": _image_bytes(rgb.convert("CMYK"), "JPEG"),
        "deep.png": _image_bytes(Image.fromarray(rng.integers(0, 65535, (20, 30), dtype=np.uint16)), "PNG"),
        "rotated.jpg": rotated,
        "plain.bmp": _image_bytes(rgb, "BMP"),
        "large.jpg": _image_bytes(rgb.resize((640, 480)), "JPEG", quality=70),
    }
    assert Image.open(io.BytesIO(cases["deep.png"])).mode.startswith("I")
    response = _post(server, [("images", (name, data, "application/octet-stream")) for name, data in cases.items()])
    assert response.status_code == 200, response.text
    assert [p["filename"] for p in response.json()["predictions"]] == list(cases)


def _orientation_exif(value: int) -> Image.Exif:
    exif = Image.Exif()
    exif[0x0112] = value
    return exif


# ---------------------------------------------------------------------------------------------- refusals
def _bomb_png() -> bytes:
    return _image_bytes(Image.new("L", (1500, 1000)), "PNG")  # 1.5 MP, over the 1 MP limit, a few KB


def _scan_bomb(width: int, height: int, scans: int) -> bytes:
    """A progressive grey JPEG followed by ``scans`` more scans of a few bytes each, every one an end-of-band run over
    all the blocks: libjpeg passes over every block once per scan."""
    plain = _image_bytes(Image.new("L", (width, height), 128), "JPEG", progressive=True)
    table = bytes([0x12, 1, *[0] * 15, 0xE0])  # AC table 2: the one code '0' is an end-of-band run of 2^14 + 14 bits
    blocks = -(-width // 8) * -(-height // 8)
    runs = ("0" + "1" * 14) * -(-blocks // 32767)
    runs += "1" * (-len(runs) % 8)
    entropy = bytes(int(runs[i : i + 8], 2) for i in range(0, len(runs), 8)).replace(b"\xff", b"\xff\x00")
    scan = b"\xff\xda\x00\x08" + bytes([1, 1, 0x02, 1, 63, 0]) + entropy
    return plain[:-2] + b"\xff\xc4" + (2 + len(table)).to_bytes(2, "big") + table + scan * scans + b"\xff\xd9"


def test_a_jpeg_of_thousands_of_scans_is_refused_before_libjpeg_decodes_it():
    """A few bytes per scan, and each scan a pass over every block: such a file within the pixel limit keeps a
    decoding thread busy for seconds per 100 KB. Refused from the count of its scans; an ordinary progressive JPEG
    is decoded."""
    from service.uploads import Upload, decode_upload

    bomb = _scan_bomb(2000, 2000, 3000)
    refused = decode_upload(0, Upload("scans.jpg", bomb), (32, 32), MAX_PIXELS * 4, "squash")
    assert not isinstance(refused, bytes) and refused.reason == "image_too_large", refused
    assert "3006 scans, over the limit of 100" in refused.message
    assert isinstance(decode_upload(0, Upload("ok.jpg", _scan_bomb(64, 64, 0)), (32, 32), MAX_PIXELS, "squash"), bytes)


def test_a_16_bit_image_is_converted_without_copies_of_its_pixels_as_floats():
    """A 16-bit grey PNG of one level compresses to a few KB whatever its size: each float64 copy of its pixels made
    while scaling them to 8 bits costs 8 bytes a pixel, hundreds of MB at the pixel limit."""
    import tracemalloc

    from service.uploads import Upload, decode_upload

    pixels = 2000 * 2000
    png = _image_bytes(Image.fromarray(np.full((2000, 2000), 700, dtype=np.uint16)), "PNG")
    tracemalloc.start()
    try:
        decoded = decode_upload(0, Upload("deep.png", png), (32, 32), pixels, "squash")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert decoded == bytes([3]) * 32 * 32 * 3  # 700 of 65535, on the 8-bit scale
    assert peak < 2 * 8 * pixels, f"{peak / 2**20:.0f} MiB"


BAD_REQUESTS = {
    # name: (multipart parts from the JPEGs, other form fields, expected status, expected reason)
    "not_an_image": (
        lambda j: [("images", ("notes.jpg", b"these are not pixels", "image/jpeg"))],
        None,
        400,
        "not_an_image",
    ),
    "truncated": (
        lambda j: [("images", ("cut.jpg", j[0].read_bytes()[:200], "image/jpeg"))],
        None,
        400,
        "not_an_image",
    ),
    "zero_bytes": (lambda j: [("images", ("empty.jpg", b"", "image/jpeg"))], None, 400, "empty_file"),
    "bomb": (lambda j: [("images", ("bomb.png", _bomb_png(), "image/png"))], None, 413, "image_too_large"),
    "scan_bomb": (
        lambda j: [("images", ("scans.jpg", _scan_bomb(64, 64, 200), "image/jpeg"))],
        None,
        413,
        "image_too_large",
    ),
    "too_many": (lambda j: _files(j[: MAX_IMAGES + 1]), None, 400, "too_many_images"),
    "body_too_large": (
        lambda j: [("images", ("big.jpg", b"\xff" * (MAX_BODY + 1000), "image/jpeg"))],
        None,
        413,
        "body_too_large",
    ),
    "k_zero": (lambda j: _files(j[:1]), {"k": "0"}, 400, "bad_k"),
    "k_too_big": (lambda j: _files(j[:1]), {"k": "4"}, 400, "bad_k"),
    "k_not_a_number": (lambda j: _files(j[:1]), {"k": "five"}, 400, "bad_k"),
    "min_confidence_above_1": (lambda j: _files(j[:1]), {"min_confidence": "1.5"}, 400, "bad_min_confidence"),
    "min_confidence_negative": (lambda j: _files(j[:1]), {"min_confidence": "-0.1"}, 400, "bad_min_confidence"),
    "min_confidence_not_a_number": (lambda j: _files(j[:1]), {"min_confidence": "high"}, 400, "bad_min_confidence"),
    "min_confidence_nan": (lambda j: _files(j[:1]), {"min_confidence": "nan"}, 400, "bad_min_confidence"),
    "min_confidence_boolean": (lambda j: _files(j[:1]), {"min_confidence": "true"}, 400, "bad_min_confidence"),
    "min_confidence_huge": (lambda j: _files(j[:1]), {"min_confidence": "1" + "0" * 400}, 400, "bad_min_confidence"),
    "min_confidence_nested": (lambda j: _files(j[:1]), {"min_confidence": "[" * 3000}, 400, "bad_min_confidence"),
    "k_nested": (lambda j: _files(j[:1]), {"k": "[" * 3000}, 400, "bad_k"),
    "fit_unknown": (lambda j: _files(j[:1]), {"fit": "stretch"}, 400, "bad_fit"),
    "unknown_model": (lambda j: _files(j[:1]), {"model": "resnet-9000"}, 404, "unknown_model"),
    "no_images": (lambda j: [("k", (None, "1"))], None, 400, "no_images"),
    "misspelt_field": (
        lambda j: [("image", ("a.jpg", j[0].read_bytes(), "image/jpeg"))],
        None,
        400,
        "malformed_request",
    ),
    "images_as_text": (lambda j: [("images", (None, "http://example.com/cat.jpg"))], None, 400, "malformed_request"),
}


@pytest.mark.parametrize("case", list(BAD_REQUESTS))
def test_bad_input_is_a_4xx_with_a_message_and_the_next_request_succeeds(server, jpegs, case):
    make_files, data, status, reason = BAD_REQUESTS[case]
    before = _metric(_metrics(server), "cifar_rejected_inputs_total", reason=reason)
    response = _post(server, make_files(jpegs), data)
    assert response.status_code == status, response.text
    body = response.json()
    assert body["reason"] == reason and len(body["error"]) > 10
    assert _metric(_metrics(server), "cifar_rejected_inputs_total", reason=reason) == before + 1
    assert _post(server, _files(jpegs[:1])).status_code == 200


def test_the_servers_metrics_are_its_own_not_in_the_folder_every_bentoml_server_empties(server):
    """`bentoml serve` keeps its workers' metrics in $BENTOML_HOME/prometheus_multiproc_dir and empties it when it
    starts: any other BentoML server on the host would reset this one's /metrics. This one's are kept apart."""
    from urllib.parse import urlsplit

    httpx.get(f"{server}/models", timeout=10)  # a request, so that the worker has written its counters
    own = server.bentoml_home / "cifar-metrics" / f"port-{urlsplit(server).port}"
    assert any(own.glob("*.db")), sorted(server.bentoml_home.rglob("*"))
    shared = server.bentoml_home / "prometheus_multiproc_dir"
    assert not shared.exists() or not any(shared.iterdir())


def _series(text: str) -> set[str]:
    """Every metric line's name and labels, without its value; not the per-process gauges (a pid label), which a
    second worker's first request adds on a host with several."""
    lines = [line for line in text.splitlines() if line and not line.startswith("#")]
    return {line.rsplit(" ", 1)[0] for line in lines if 'pid="' not in line}


def test_a_path_the_service_does_not_serve_is_refused_in_json_as_every_other_refusal(server):
    """A mistyped path was answered with the text "Not Found": a client that reads the JSON error of every other
    refusal failed to parse it. Now the contract's error (the protocol's on /v2), naming the API's paths."""
    with httpx.Client(base_url=server, timeout=10) as client:
        for path in ("/clasify", "/v2/nothing/here", "/models/x"):
            response = client.get(path)
            assert response.status_code == 404, path
            assert response.headers["content-type"].startswith("application/json"), (path, response.text)
            body = response.json()
            assert "/classify" in body["error"] and repr(path) in body["error"], body
            assert body.get("reason") == (None if path.startswith("/v2/") else "no_such_path"), body
        # a refusal, not a rejected input: no input was read
        assert 'reason="no_such_path"' not in _metrics(server)
        # a trailing slash on a real path is named as the mistake it is
        slash = client.post("/classify/", files={"images": ("a.png", b"x", "image/png")})
        assert slash.status_code == 404 and slash.json()["reason"] == "no_such_path", slash.text
        assert "did you mean '/classify', without the trailing slash?" in slash.json()["error"]


def test_a_trailing_slash_on_a_json_api_is_no_such_path_whatever_its_body(server):
    """POST /infer/ and /models/ (no such paths) had their body read and judged as if they were served: a bad body
    was a 400 (counted as the caller's malformed request), and only a good one reached the 404 saying the path."""
    json_type = {"content-type": "application/json"}
    with httpx.Client(base_url=server, timeout=10) as client:
        for path in ("/infer/", "/models/"):
            for body in (b"{not json", b'{"items": []}', b"{}"):
                answer = client.post(path, content=body, headers=json_type)
                assert answer.status_code == 404, (path, body, answer.text)
                assert answer.json()["reason"] == "no_such_path", answer.text
                assert f"did you mean {path.rstrip('/')!r}, without the trailing slash?" in answer.json()["error"]


def test_the_routers_plain_text_404_and_405_are_refused_in_json_too(server):
    """A POST to a GET-only route (/readyz, /v2) and a missing file under /static were answered by the routers in
    plain text ("Method Not Allowed", "Not Found"); now as every other refusal, a 405 keeping its Allow."""
    with httpx.Client(base_url=server, timeout=10) as client:
        for path in ("/readyz", "/docs.json", "/v2", "/v2/health/live"):
            response = client.post(path)
            assert response.status_code == 405 and "GET" in response.headers["allow"], (path, response.text)
            assert response.headers["content-type"].startswith("application/json"), (path, response.text)
            body = response.json()
            assert f"POST is not allowed on {path}; it takes" in body["error"], body
            assert body.get("reason") == (None if path.startswith("/v2") else "method_not_allowed"), body
        missing = client.get("/static/nothing.js")
        assert missing.status_code == 404 and missing.json()["reason"] == "no_such_path", missing.text
        assert "'/static/nothing.js'" in missing.json()["error"]
        # the page's own files and the routes' JSON refusals pass as they were
        assert client.get("/static/app.js").status_code == 200
        unknown = client.get("/v2/models/nothing")
        assert unknown.status_code == 404 and set(unknown.json()) == {"error"} and "nothing" in unknown.json()["error"]


def test_request_metrics_are_labelled_by_route_so_made_up_paths_add_no_series(server):
    """BentoML labels its request metrics with the path: every made-up path or model name was a new series
    (4 KB of /metrics each, without bound). Labelled by route, a thousand such requests add none after the first."""
    import random

    rng = random.Random(0)
    paths = [f"/x{rng.getrandbits(40):x}" for _ in range(20)] + [f"/v2/models/m{i}" for i in range(20)]
    with httpx.Client(base_url=server, timeout=10) as client:
        assert client.get("/models").status_code == 200  # a route without parameters keeps its path
        for path in (paths[0], paths[20]):  # the two series these make: unmatched, and the metadata route's
            client.get(path)
        before = _series(_metrics(server))
        for path in paths:
            assert client.get(path).status_code == 404
        text = _metrics(server)
    assert _series(text) == before and not any(path in text for path in paths)
    unmatched = _metric(text, "bentoml_service_request_total", endpoint="(unmatched)", http_response_code="404")
    by_name = _metric(text, "bentoml_service_request_total", endpoint="/v2/models/{name}", http_response_code="404")
    assert unmatched >= 20 and by_name >= 20
    assert _metric(text, "bentoml_service_request_total", endpoint="/models", http_response_code="200") >= 1


def test_a_client_that_hangs_up_mid_body_is_no_server_error(server):
    """Headers and part of a body, then the connection closed: recorded as nginx's 499, not as a 500 with a
    traceback, nor as the client's malformed request, on every route that reads a body."""
    import socket
    import time
    from urllib.parse import urlsplit

    host, port = urlsplit(server).hostname, urlsplit(server).port
    cases = (
        ("/classify", "application/json", b'{"images": [{"da'),
        ("/classify", "multipart/form-data; boundary=x", b'--x\r\nContent-Disposition: form-data; name="images"'),
        ("/v2/models/tiny/infer", "application/json", b'{"inputs": [{"na'),
        ("/infer", "application/json", b'{"items": [{"pi'),
    )
    labels = ("/classify", "/v2/models/{name}/infer", "/infer")  # requests are counted by route
    log_before = len(server.log.read_text())
    before = _metrics(server)
    for path, content_type, part in cases:
        with socket.create_connection((host, port), timeout=10) as conn:
            head = f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: {content_type}\r\nContent-Length: 100000\r\n\r\n"
            conn.sendall(head.encode() + part)
            time.sleep(0.3)

    def count(text: str, path: str, code: str) -> float:
        return _metric(text, "bentoml_service_request_total", endpoint=path, http_response_code=code)

    deadline = time.monotonic() + 20
    while True:
        after = _metrics(server)
        closed = {label: count(after, label, "499") - count(before, label, "499") for label in labels}
        if closed == {"/classify": 2, "/v2/models/{name}/infer": 1, "/infer": 1} or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert closed == {"/classify": 2, "/v2/models/{name}/infer": 1, "/infer": 1}, closed
    for label in labels:
        assert count(after, label, "500") == count(before, label, "500") and count(after, label, "400") == count(
            before, label, "400"
        ), label
    assert "Traceback" not in server.log.read_text()[log_before:]
    assert _metric(after, "cifar_rejected_inputs_total") == _metric(before, "cifar_rejected_inputs_total")


def test_a_compressed_body_is_415_on_every_route_not_bytes_that_do_not_parse(server):
    import gzip

    body = gzip.compress(b'{"images": []}')
    for path, content_type in (
        ("/classify", "application/json"),
        ("/classify", "multipart/form-data; boundary=x"),
        ("/v2/models/tiny/infer", "application/json"),
    ):
        headers = {"content-type": content_type, "content-encoding": "gzip"}
        response = httpx.post(f"{server}{path}", content=body, headers=headers, timeout=10)
        assert response.status_code == 415, (path, response.text)
        assert "Content-Encoding 'gzip' is not read: send the body uncompressed" in response.json()["error"]


def test_neither_multipart_nor_json_is_415_and_json_paths_are_never_read(server, jpegs):
    response = httpx.post(f"{server}/classify", content=b"cat.jpg", headers={"content-type": "text/plain"}, timeout=10)
    assert response.status_code == 415 and response.json()["reason"] == "unsupported_media_type"
    response = httpx.post(f"{server}/classify", json={"images": ["/etc/passwd"]}, timeout=10)
    assert response.status_code == 400 and response.json()["reason"] == "malformed_request"
    assert "images[0] must be an object" in response.json()["error"]
    garbled = httpx.post(
        f"{server}/classify",
        content=b"garbage",
        headers={"content-type": "multipart/form-data; boundary=x"},
        timeout=10,
    )
    assert garbled.status_code == 400 and garbled.json()["reason"] == "malformed_request"
    assert "let the HTTP client build it: curl -F images=@cat.jpg" in garbled.json()["error"], garbled.text
    for content_type in ("multipart/form-data", "multipart/form-data; boundary=", 'multipart/form-data; boundary=""'):
        unbounded = httpx.post(
            f"{server}/classify", content=b"--x\r\n", headers={"content-type": content_type}, timeout=10
        )
        assert unbounded.status_code == 400, (content_type, unbounded.text)
        assert "names no boundary=" in unbounded.json()["error"], (content_type, unbounded.text)
    part = (
        b'--x\r\nContent-Disposition: form-data; name="images"; filename="a.jpg"\r\n'
        b"Content-Type: image/jpeg\r\n\r\n" + jpegs[0].read_bytes()
    )
    for body in (part, part + b'\r\n--x\r\nContent-Disposition: form-data; name="k"\r\n\r\n2'):
        unfinished = httpx.post(
            f"{server}/classify", content=body, headers={"content-type": "multipart/form-data; boundary=x"}, timeout=10
        )
        assert unfinished.status_code == 400 and unfinished.json()["reason"] == "malformed_request", unfinished.text
        assert "closing boundary" in unfinished.json()["error"]  # not "no images": an image was sent
    finished = httpx.post(
        f"{server}/classify",
        content=part + b"\r\n--x--\r\n",
        headers={"content-type": "multipart/form-data; boundary=x"},
        timeout=10,
    )
    assert finished.status_code == 200, finished.text
    assert _post(server, _files(jpegs[:1])).status_code == 200


def _infer_body(pixels: bytes, dtype: str = "float32", model: str = "tiny") -> dict:
    return {"items": [{"model": model, "pixels": base64.b64encode(pixels).decode(), "dtype": dtype}]}


def _floats(value: float) -> bytes:
    return (
        np.full((3, 32, 32), 0.5, dtype="<f4")
        .tobytes()
        .replace(np.float32(0.5).tobytes(), np.float32(value).tobytes(), 1)
    )


BAD_INFER_REQUESTS = {
    # name: (body as JSON, or raw bytes with a content type) -> (status, reason)
    "nan": (_infer_body(_floats(float("nan"))), 400, "bad_tensor"),
    "infinite": (_infer_body(_floats(float("inf"))), 400, "bad_tensor"),
    "above 1": (_infer_body(_floats(1.5)), 400, "bad_tensor"),
    "negative": (_infer_body(_floats(-0.01)), 400, "bad_tensor"),
    "short pixels": (_infer_body(b"\0" * 100, "uint8"), 400, "bad_tensor"),
    "unknown model": (_infer_body(b"\0" * 3072, "uint8", model="resnet-9000"), 404, "unknown_model"),
    "not json": ((b"items", "text/plain"), 415, "unsupported_media_type"),
    "gzipped": ((b"\x1f\x8b\x08\x00", "application/json", "gzip"), 415, "unsupported_media_type"),
    "garbled json": ((b"{items: [", "application/json"), 400, "malformed_request"),
    "too large": ((b" " * (MAX_BODY + 1), "application/json"), 413, "body_too_large"),
    # a field /infer does not read would be silently ignored (the pixels are fitted already)
    "unknown item field": (
        {"items": [{**_infer_body(b"\0" * 3072, "uint8")["items"][0], "fit": "pad"}]},
        400,
        "malformed_request",
    ),
    "no items": ({"items": []}, 400, "no_images"),
}


@pytest.mark.parametrize("case", list(BAD_INFER_REQUESTS))
def test_infer_refuses_with_the_contracts_reason_status_and_count(server, case):
    """/infer answers a refusal as /classify does, float pixels no image could give included (the model would
    answer NaN, or be confident about pixels it never saw); a good float tensor is served."""
    body, status, reason = BAD_INFER_REQUESTS[case]
    before = _metric(_metrics(server), "cifar_rejected_inputs_total", reason=reason)
    if isinstance(body, dict):
        response = httpx.post(f"{server}/infer", json=body, timeout=30)
    else:
        headers = {"content-type": body[1], **({"content-encoding": body[2]} if len(body) > 2 else {})}
        response = httpx.post(f"{server}/infer", content=body[0], headers=headers, timeout=30)
    assert response.status_code == status, response.text
    assert response.json()["reason"] == reason and len(response.json()["error"]) > 10
    if case == "unknown item field":
        assert "unknown field items[0].fit" in response.json()["error"], response.text
    assert _metric(_metrics(server), "cifar_rejected_inputs_total", reason=reason) == before + 1
    good = httpx.post(f"{server}/infer", json=_infer_body(_floats(1.0)), timeout=30)
    assert good.status_code == 200 and abs(sum(good.json()[0]) - 1) < 1e-4


def test_every_route_counts_the_images_it_classifies(server, jpegs):
    """cifar_predictions_total is images classified, whichever route they came by."""

    def count() -> float:
        return _metric(_metrics(server), "cifar_predictions_total", model="tiny")

    before = count()
    assert httpx.post(f"{server}/infer", json=_infer_body(_floats(1.0)), timeout=30).status_code == 200
    assert count() == before + 1
    assert _post(server, _files(jpegs[:2]), {"model": "tiny"}).status_code == 200
    assert count() == before + 3
    images = [base64.b64encode(p.read_bytes()).decode() for p in jpegs[:3]]
    v2 = {"inputs": [{"name": "images", "shape": [3], "datatype": "BYTES", "data": images}]}
    assert httpx.post(f"{server}/v2/models/tiny/infer", json=v2, timeout=30).status_code == 200
    assert count() == before + 6


# ---------------------------------------------------------------------------------------------- the page
# tests/test_service_protocols.py drives the page's main paths in Chromium; these are the odd users and answers.
def _until(page, done, what: str, seconds: float = 15) -> None:
    """Poll from here: the page's policy forbids the string evaluation wait_for_function does for an expression."""
    import time

    deadline = time.monotonic() + seconds
    while not done():
        assert time.monotonic() < deadline, f"not {what}: status {page.inner_text('#status')!r}"
        page.wait_for_timeout(100)


def _png(tmp_path: Path, name: str = "photo.png") -> str:
    path = tmp_path / name
    path.write_bytes(_image_bytes(Image.new("RGB", (40, 30), (200, 40, 40)), "PNG"))
    return str(path)


def test_the_page_works_where_the_browser_blocks_session_storage(server, tmp_path):
    """A browser blocking site data throws on any use of sessionStorage: reading the saved key threw before the
    models were listed, and the page stayed empty, saying nothing."""
    blocked = (
        "Object.defineProperty(window, 'sessionStorage', "
        "{get() { throw new DOMException('access is denied', 'SecurityError'); }});"
    )
    with open_page(server, init_script=blocked) as (page, errors):
        page.get_by_label("Choose images").set_input_files(_png(tmp_path))
        _until(page, lambda: page.inner_text("#status").startswith("1 of 1"), "classified")
    assert not errors, errors


def test_a_threshold_refused_mid_run_leaves_the_run_on_screen_to_finish(server, tmp_path):
    """A "Mark unsure below" changed to no percentage while images were being classified stopped the run and started
    none: its cards said "classifying…" and the status "Classifying 3 image(s)…" for good."""
    held: list = []
    with open_page(server, classify=lambda route: held.append(route)) as (page, errors):
        page.get_by_label("Choose images").set_input_files([_png(tmp_path, f"{i}.png") for i in range(3)])
        _until(page, lambda: len(held) == 3, "sent")
        page.get_by_label("Mark unsure below (%)").fill("150")
        page.get_by_label("Mark unsure below (%)").press("Tab")
        refusal = page.inner_text("#error")
        for route in held:
            route.continue_()
        _until(page, lambda: page.inner_text("#status").startswith("3 of 3 images classified"), "classified")
        cards = page.eval_on_selector_all(".answer", "answers => answers.map(a => a.innerText)")
        # dropped with a file that is no image: the note on it came in place of the refusal
        page.evaluate(
            """() => { const files = new DataTransfer();
              files.items.add(new File(["x"], "a.png", {type: "image/png"}));
              files.items.add(new File(["x"], "notes.txt", {type: "text/plain"}));
              document.getElementById("drop").dispatchEvent(new DragEvent("drop", {dataTransfer: files})); }"""
        )
        both = page.inner_text("#error")
    assert not errors, errors
    assert "percentage from 0 to 100" in refusal, refusal
    assert "percentage from 0 to 100" in both and "1 dropped file left out: not an image" in both, both
    assert len(cards) == 3 and not any("classifying" in card for card in cards), cards


def test_a_gateways_own_error_object_is_its_status_on_the_card_not_object_object(server, tmp_path):
    """A proxy in front of the service answering {"error": {...}} put "[object Object]" on the card."""

    def gateway(route):
        route.fulfill(status=502, json={"error": {"code": 502, "message": "upstream connect error"}})

    with open_page(server, classify=gateway) as (page, errors):
        page.get_by_label("Choose images").set_input_files(_png(tmp_path))
        _until(page, lambda: page.inner_text("#status").startswith("0 of 1"), "refused")
        card = page.inner_text(".answer.error")
    assert not errors, errors
    assert card.startswith("502") and "object" not in card, card


def test_the_pages_cards_stay_on_a_narrow_screen(server, tmp_path):
    """On a screen narrower than a card's 17rem (a small phone, or larger text) the cards ran off the page."""
    with open_page(server, width=300) as (page, errors):
        page.get_by_label("Choose images").set_input_files([_png(tmp_path, "a.png"), _png(tmp_path, "b.png")])
        _until(page, lambda: page.inner_text("#status").startswith("2 of 2"), "classified")
        drop = page.locator("#drop").bounding_box()
        cards = [page.locator(".card").nth(i).bounding_box() for i in range(2)]
        bars = [page.locator(".bars").nth(i).bounding_box() for i in range(2)]
    assert not errors, errors
    for card, bar in zip(cards, bars):
        assert card["x"] >= drop["x"] and card["x"] + card["width"] <= drop["x"] + drop["width"] + 0.5, (card, drop)
        assert bar["x"] + bar["width"] <= card["x"] + card["width"] - 1, (bar, card)  # inside its border


# ---------------------------------------------------------------------------------------------- batching and metrics
def _concurrent_requests(url, jpegs, models=(None,)) -> tuple[list[httpx.Response], float, float]:
    """96 two-image requests from 24 threads, taking turns at ``models`` (None: the default); (responses,
    batches run, requests batched) from /metrics."""
    name = "bentoml_service_adaptive_batch_size"
    before = _metrics(url)

    def one(i: int) -> httpx.Response:
        model = models[i % len(models)]
        fields = {"k": "3", **({"model": model} if model else {})}
        return _post(url, _files([jpegs[i % len(jpegs)], jpegs[(i + 1) % len(jpegs)]]), fields)

    with ThreadPoolExecutor(24) as pool:
        responses = list(pool.map(one, range(96)))
    after = _metrics(url)
    batches = _metric(after, f"{name}_count", method_name="infer") - _metric(
        before, f"{name}_count", method_name="infer"
    )
    requests = _metric(after, f"{name}_sum", method_name="infer") - _metric(before, f"{name}_sum", method_name="infer")
    return responses, batches, requests


def test_concurrent_requests_get_their_own_answers(server, jpegs):
    """The default settings: batches from several streams at once on one session."""
    alone = {p.name: _post(server, _files([p]), {"k": "3"}).json()["predictions"][0]["top_k"] for p in jpegs}
    predictions_before = _metric(_metrics(server), "cifar_predictions_total", model="tiny")
    responses, _, requests = _concurrent_requests(server, jpegs)
    assert all(r.status_code == 200 for r in responses), [r.text for r in responses if r.status_code != 200][:2]
    for i, r in enumerate(responses):  # batched with others, each image gets the answer it gets alone
        predictions = r.json()["predictions"]
        assert [p["filename"] for p in predictions] == [jpegs[i % 12].name, jpegs[(i + 1) % 12].name]
        for p in predictions:  # all 3 classes: compared by class, as near-ties may swap places
            got = {t["index"]: t["confidence"] for t in p["top_k"]}
            assert got == pytest.approx({t["index"]: t["confidence"] for t in alone[p["filename"]]}, abs=1e-5)
    assert requests == 96  # every request went through the batchable API's dispatcher
    assert _metric(_metrics(server), "cifar_predictions_total", model="tiny") == predictions_before + 192
    log = server.log.read_text()
    assert "batching 'infer' in-process through BentoML's dispatcher" in log
    from service.settings import cpu_count

    if cpu_count() > 1:
        assert f"up to {cpu_count()} batches at once" in log


def test_concurrent_requests_share_a_batch(tiny_models_dir, jpegs, tmp_path):
    """One stream: requests that arrive while a batch runs are batched together. (With a stream per core
    and this tiny model the engine keeps up with the client, so there is nothing to batch.)"""
    env = {**os.environ, "BENTOML_HOME": str(tmp_path / "bentoml_home"), "BENTOML_DO_NOT_TRACK": "true"}
    with running_service(tiny_models_dir, tmp_path / "server.log", "--streams", "1", "--threads", "1", env=env) as url:
        responses, batches, requests = _concurrent_requests(url, jpegs)
    assert all(r.status_code == 200 for r in responses)
    assert requests == 96
    assert batches < 96


def test_each_model_has_its_own_batching_queue(tiny_models_dir, jpegs, tmp_path):
    """Requests for two models at once: batched, but never into one batch together (a fast model's images
    would wait for a slow one's), and each model's queue is its own."""
    env = {**os.environ, "BENTOML_HOME": str(tmp_path / "bentoml_home"), "BENTOML_DO_NOT_TRACK": "true"}
    with running_service(tiny_models_dir, tmp_path / "server.log", "--streams", "1", "--threads", "1", env=env) as url:
        before = _metrics(url)
        responses, batches, requests = _concurrent_requests(url, jpegs, models=("tiny", "tiny-int8"))
        after = _metrics(url)
    assert all(r.status_code == 200 for r in responses)
    assert [r.json()["model"] for r in responses[:4]] == ["tiny", "tiny-int8"] * 2
    assert requests == 96 and batches < 96

    def grew(name: str) -> dict[str, float]:
        return {m: _metric(after, name, model=m) - _metric(before, name, model=m) for m in ("tiny", "tiny-int8")}

    runs, images = grew("cifar_batch_images_count"), grew("cifar_batch_images_sum")
    assert images == {"tiny": 96, "tiny-int8": 96}
    assert sum(runs.values()) == batches  # each batch ran one model only
    log = (tmp_path / "server.log").read_text()
    assert "a batching queue of its own for 'tiny'" in log and "a batching queue of its own for 'tiny-int8'" in log


# ---------------------------------------------------------------------------------------------- OpenAPI
def test_openapi_document_describes_the_api(server):
    spec = httpx.get(f"{server}/docs.json").json()
    classify = spec["paths"]["/classify"]["post"]
    form = classify["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert form["required"] == ["images"] and form["additionalProperties"] is False
    assert classify["requestBody"]["required"] is True
    pixels = spec["components"]["schemas"]["InferItem"]["properties"]["pixels"]
    assert (pixels["minLength"], pixels["maxLength"]) == (4096, 16384)  # 32x32x3 uint8 or float32, in base64
    assert form["properties"]["images"]["items"] == {"format": "binary", "type": "string"}
    assert form["properties"]["images"]["maxItems"] == MAX_IMAGES
    assert form["properties"]["k"]["type"] == "integer" and form["properties"]["k"]["minimum"] == 1
    threshold = form["properties"]["min_confidence"]
    assert (threshold["type"], threshold["minimum"], threshold["maximum"]) == ("number", 0, 1)
    assert form["properties"]["fit"]["enum"] == ["center_crop", "squash", "pad", None]
    assert "confident" in spec["components"]["schemas"]["Prediction"]["properties"]
    assert {"200", "400", "404", "413", "415"} <= set(classify["responses"])
    refusal = spec["paths"]["/infer"]["post"]["responses"]["404"]["content"]["application/json"]["schema"]
    assert refusal == {"$ref": "#/components/schemas/ClassifyError"}  # /infer refuses as /classify does
    assert "ClassifyError" in spec["components"]["schemas"]
    assert "get" in spec["paths"]["/models"]
    for path in ("/livez", "/readyz", "/metrics"):
        assert path in spec["paths"]


def test_property_based_api_tester_finds_no_server_error_or_undocumented_answer(server, tmp_path):
    """schemathesis generates requests from the OpenAPI document, valid and invalid, and checks every answer:
    no 5xx, status codes, content types, headers and bodies as documented, invalid input refused. Left out:
    that every schema-valid request is accepted, since a file part the schema can only call binary may
    still not be an image (a 400, as it should be). An invalid request is refused by its status: schemathesis's own
    list of refusals lacks 413, the answer to an invalid body too large to read (a pixels string over its length)."""
    cli = Path(sys.executable).with_name("schemathesis")
    refusals = ["400", "401", "403", "404", "405", "406", "409", "413", "415", "422", "428", "429"]
    (tmp_path / "schemathesis.toml").write_text(f"[checks.negative_data_rejection]\nexpected-statuses = {refusals}\n")
    done = subprocess.run(
        [
            str(cli),
            "run",
            f"{server}/docs.json",
            "--checks",
            "all",
            "--exclude-checks",
            "positive_data_acceptance",
            "--max-examples",
            "25",
            "--seed",
            "7",
            "--no-color",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )  # its cache: not in the repo
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    cases = re.search(r"(\d+) generated, (\d+) passed", done.stdout)
    assert cases and cases[1] == cases[2] and int(cases[1]) >= 100, done.stdout[-2000:]


# ---------------------------------------------------------------------------------------------- CLI and packaging
def test_serve_refuses_a_models_dir_without_a_manifest(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "service", "serve", "--models-dir", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2 and "no model manifest" in done.stderr


def test_serve_refuses_a_bad_setting_naming_where_it_came_from(tmp_path):
    """A flag's bad value is named by the flag the user typed, an environment variable's by the variable."""
    serve = [sys.executable, "-m", "service", "serve"]
    run = dict(cwd=ROOT, capture_output=True, text=True, timeout=120)
    done = subprocess.run([*serve, "--max-batch-size", "zero"], **run)
    assert done.returncode == 2 and "error: --max-batch-size must be an integer, got 'zero'" in done.stderr
    done = subprocess.run(serve, env={**os.environ, "CIFAR_MAX_BATCH_SIZE": "zero"}, **run)
    assert done.returncode == 2 and "error: CIFAR_MAX_BATCH_SIZE must be an integer, got 'zero'" in done.stderr


def _damaged_models(tiny_models_dir: Path, tmp_path: Path) -> dict[str, tuple[Path, str]]:
    """Copies of the tiny models folder whose files pass their sha256 but fail as a worker loads them."""
    import hashlib
    import shutil

    from inference.manifest import load_manifest

    made = {}
    for kind in ("relabelled", "junk"):
        models = tmp_path / kind
        shutil.copytree(tiny_models_dir, models)
        raw = json.loads((models / "manifest.json").read_text())
        entry = raw["models"][0]
        if kind == "relabelled":  # the manifest's classes, not the file's own
            entry["classes"] = [f"{c}-x" for c in entry["classes"]]
            said = f"model {entry['name']!r}: {entry['file']} describes itself differently from the manifest"
        else:  # bytes ONNX Runtime cannot load, recorded with their own hash
            (models / entry["file"]).write_bytes(b"not onnx at all")
            entry["sha256"] = hashlib.sha256(b"not onnx at all").hexdigest()
            said = f"model {entry['name']!r}: {models / entry['file']} is not an ONNX model ONNX Runtime can load"
        (models / "manifest.json").write_text(json.dumps(raw))
        load_manifest(models, verify=True)  # every hash still matches
        made[kind] = (models, said)
    return made


def test_serve_refuses_a_model_a_worker_could_not_load_before_it_starts(tiny_models_dir, tmp_path, monkeypatch, capsys):
    """A file ONNX Runtime cannot load, or whose card is not its manifest entry, passes the manifest's sha256
    check: the server used to start, and BentoML to start the failing worker again every ten seconds, for ever."""
    from service.__main__ import main as service_main

    def started(*args):
        raise AssertionError("bentoml serve was started")

    monkeypatch.setattr(os, "execve", started)
    damaged = _damaged_models(tiny_models_dir, tmp_path)
    for models, said in damaged.values():
        assert service_main(["serve", "--models-dir", str(models)]) == 2
        err = capsys.readouterr().err
        assert said in err and "serving" not in err and "Traceback" not in err, err
    # The container's own command, without serve's checks: refused once by the server's process.
    models, said = damaged["relabelled"]
    argv = [str(Path(sys.executable).with_name("bentoml")), "serve", "service.service:Classifier", "--port", "1"]
    env = {**os.environ, "CIFAR_MODELS_DIR": str(models)}
    done = subprocess.run(argv, env=env, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and said in done.stderr and "Traceback" not in done.stderr, done.stderr[-800:]
    for models, said in damaged.values():  # the doctor says the same as a failed check, not in a traceback
        assert service_main(["doctor", "--no-speed", "--device", "cpu", "--models-dir", str(models)]) == 1
        out = capsys.readouterr().out
        assert re.search(r"FAIL\s+model tiny\s+", out) and said.split(": ", 1)[1] in out, out
        assert "will NOT work on this host" in out
    assert service_main(["serve", "--models-dir", str(tiny_models_dir), "--threads", str(2**31)]) == 2
    assert f"error: --threads must be at most 1024, got {2**31}" in capsys.readouterr().err


def test_the_server_does_not_open_the_files_serve_has_just_checked_again(
    tiny_models_dir, tmp_path, monkeypatch, capsys
):
    """`python -m service serve` opened every model file, then the server it started opened them all again
    (about a second). serve now hands the server the digest of the manifest it checked; the server skips its
    check of that manifest only, and checks any other (the container's `bentoml serve`, a changed manifest)."""
    from service.__main__ import main as service_main
    from service.loading import CHECKED_ENV

    started: dict = {}

    def exec_spy(path, argv, env):
        started.update(env)
        raise SystemExit(0)

    monkeypatch.setattr(os, "execve", exec_spy)
    # nothing listens (execve is a spy): a port another program took since free_port found it is not what is tested
    monkeypatch.setattr("service.serve_cli.bind_error", lambda host, port: None)
    with pytest.raises(SystemExit):
        service_main(["serve", "--models-dir", str(tiny_models_dir), "--port", str(free_port())])
    digest = hashlib.sha256((tiny_models_dir / "manifest.json").read_bytes()).hexdigest()
    assert started[CHECKED_ENV] == digest

    # A file the server's check would refuse (its card relabelled, its sha256 recorded): the server's process
    # starts when serve's mark names this manifest, and refuses it under any other mark.
    models, said = _damaged_models(tiny_models_dir, tmp_path)["relabelled"]
    mark = hashlib.sha256((models / "manifest.json").read_bytes()).hexdigest()
    code = "import service.service"
    for value, expected in ((mark, 0), (digest, 2), ("", 2)):
        env = {**os.environ, "CIFAR_MODELS_DIR": str(models), CHECKED_ENV: value}
        done = subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True)
        assert done.returncode == expected, (value, done.stderr[-800:])
        assert (said in done.stderr) == (expected == 2), done.stderr[-800:]


def test_serve_refuses_a_flag_given_empty(tiny_models_dir, monkeypatch, capsys):
    """`--api-keys "$KEYS"` with KEYS unset served with no key asked for; an empty path flag meant the current
    folder ("/work/main: Is a directory" for a key file)."""
    from service.__main__ import main as service_main

    def started(*args):
        raise AssertionError("bentoml serve was started")

    monkeypatch.setattr(os, "execve", started)
    for flag in ("--api-keys", "--api-keys-file", "--models-dir"):
        argv = ["serve", "--models-dir", str(tiny_models_dir), flag, " "]
        assert service_main(argv) == 2, flag
        assert (
            capsys.readouterr().err == f"error: {flag} is empty: give a value, or leave the flag out for its default\n"
        )


def test_doctor_takes_its_flags_over_the_variables_and_a_models_folder_that_is_a_file_is_named(
    tiny_models_dir, monkeypatch, capsys
):
    """CIFAR_DEVICE=gpu was refused by the doctor even under --device cpu (serve takes the flag); a models folder
    that is a file was "no model manifest at FILE/manifest.json"."""
    from service.__main__ import main as service_main

    monkeypatch.setenv("CIFAR_DEVICE", "gpu")
    assert service_main(["doctor", "--no-speed", "--device", "cpu", "--models-dir", str(tiny_models_dir)]) == 0
    assert capsys.readouterr().out.rstrip().endswith("--device cpu: will work on this host")
    a_file = tiny_models_dir / "tiny.onnx"
    assert service_main(["doctor", "--no-speed", "--device", "cpu", "--models-dir", str(a_file)]) == 2
    assert capsys.readouterr().err == f"error: models folder {a_file} is a file, not a folder\n"


def test_doctor_reports_every_missing_or_altered_model_file_as_a_failed_check(tiny_models_dir, tmp_path, capsys):
    """A missing or altered model file was a usage error (exit 2, one line, no report) naming only the first;
    it is a failed check of its model in the full report (exit 1), and the other models are still checked."""
    import shutil

    from service.__main__ import main as service_main

    models = tmp_path / "models"
    shutil.copytree(tiny_models_dir, models)
    argv = ["doctor", "--no-speed", "--device", "cpu", "--models-dir", str(models)]
    (models / "tiny-int8.onnx").unlink()
    assert service_main(argv) == 1
    out = capsys.readouterr().out
    assert re.search(rf"FAIL\s+model tiny-int8\s+model 'tiny-int8': file {models / 'tiny-int8.onnx'} is missing", out)
    assert re.search(r"ok\s+model tiny\s+fp32, every node on CPUExecutionProvider", out), out
    assert "--device cpu: will NOT work on this host: model tiny-int8:" in out
    (models / "tiny.onnx").write_bytes((models / "tiny.onnx").read_bytes()[:-10])
    assert service_main(argv) == 1
    out = capsys.readouterr().out
    assert re.search(r"FAIL\s+model tiny\s+model 'tiny': file .* does not match the manifest", out), out
    assert re.search(r"FAIL\s+model tiny-int8\s+.* is missing", out) and "(and 1 more failure above)" in out


def test_doctor_says_each_step_on_stderr_as_it_starts(tiny_models_dir, monkeypatch, capsys):
    """A full doctor run (about 4.5 minutes on a busy host) printed nothing until its report, as if hung: it
    says each step on stderr as it starts, a model's check and its timing with its place in the list, and
    leaves stdout the report alone."""
    from service import doctor_model
    from service.__main__ import main as service_main

    monkeypatch.setattr(doctor_model, "SPEED_SECONDS", 0.01)
    seen = []
    timed = doctor_model.images_per_second

    def images_per_second(*args, **kwargs):  # what stderr said by the time the first model is timed
        seen.append(capsys.readouterr())
        return timed(*args, **kwargs)

    monkeypatch.setattr(doctor_model, "images_per_second", images_per_second)
    assert service_main(["doctor", "--device", "cpu", "--models-dir", str(tiny_models_dir)]) == 0
    first, out, err = seen[0], capsys.readouterr().out, "".join(c.err for c in seen) + capsys.readouterr().err
    assert first.out == "" and first.err.splitlines()[-2:] == ["checking tiny (1/2)", "timing tiny (1/2)"], first
    assert err.splitlines()[0].startswith("checking the host")
    assert "checking tiny-int8 (2/2)\ntiming tiny-int8 (2/2)\n" in err, err
    assert out.rstrip().endswith("--device cpu: will work on this host") and "timing" not in out, out


def test_doctor_times_each_model_without_a_warm_up_at_the_batch_size_it_has_run(tiny_models_dir, monkeypatch, capsys):
    """A multi-crop FP16 model on 2 CPU cores takes over a minute a batch of 256, and doctor ran four such batches
    per model (its check, a warm-up, two timed): 12 minutes for the shipped models. The check's batch is the
    warm-up; a run longer than the timing's seconds is timed once."""
    from inference.runtime import OnnxClassifier
    from service import doctor_model
    from service.__main__ import main as service_main

    clock = [0.0]
    calls: dict[int, int] = {}
    real_logits = OnnxClassifier.logits

    def logits(self, x):  # each call "takes" a minute
        calls[len(x)] = calls.get(len(x), 0) + 1
        clock[0] += 60.0
        return real_logits(self, x)

    monkeypatch.setattr(OnnxClassifier, "logits", logits)
    monkeypatch.setattr(doctor_model.time, "perf_counter", lambda: clock[0])
    assert service_main(["doctor", "--device", "cpu", "--models-dir", str(tiny_models_dir), "--model", "tiny"]) == 0
    out = capsys.readouterr().out
    # the check (256 generated images) and one timed run; batch 1 has its warm-up and one timed run
    assert calls == {doctor_model.GENERATED_IMAGES: 2, 1: 2}, calls
    assert "images/s on CPUExecutionProvider: batch 1: 0, batch 256: 4" in out, out


def test_doctor_says_a_folder_in_place_of_a_model_file_is_not_a_file(tiny_models_dir, tmp_path, capsys):
    """A folder where a model's .onnx file should be was reported as "missing", sending the user to look
    for a file that is there."""
    import shutil

    from service.__main__ import main as service_main

    models = tmp_path / "models"
    shutil.copytree(tiny_models_dir, models)
    (models / "tiny-int8.onnx").unlink()
    (models / "tiny-int8.onnx").mkdir()
    assert service_main(["doctor", "--no-speed", "--device", "cpu", "--models-dir", str(models)]) == 1
    out = capsys.readouterr().out
    said = f"model 'tiny-int8': file {models / 'tiny-int8.onnx'} is a folder, not a file"
    assert re.search(rf"FAIL\s+model tiny-int8\s+{re.escape(said)}$", out, re.M) and "missing" not in out, out


def test_bentoml_serve_itself_refuses_a_bad_setting_in_one_line(tmp_path):
    """The container runs `bentoml serve` on the service, without `python -m service serve`'s checks: a bad
    value, an unreadable key file or a missing models folder is still one line and exit 2, not a traceback."""
    bentoml = Path(sys.executable).with_name("bentoml")
    argv = [str(bentoml), "serve", "service.service:Classifier", "--port", "1"]  # refused before it listens
    run = dict(cwd=ROOT, capture_output=True, text=True, timeout=120)
    for env, said in (
        ({"CIFAR_MAX_IMAGES": "abc"}, "error: CIFAR_MAX_IMAGES must be an integer, got 'abc'"),
        ({"CIFAR_API_KEYS_FILE": str(tmp_path / "none")}, f"error: CIFAR_API_KEYS_FILE {tmp_path / 'none'}:"),
        # a models folder that is not there (a mount missing): once, not a worker's traceback again and again
        ({"CIFAR_MODELS_DIR": str(tmp_path / "none")}, f"error: no model manifest at {tmp_path / 'none'}"),
    ):
        done = subprocess.run(argv, env={**os.environ, **env}, **run)
        assert done.returncode == 2 and said in done.stderr and "Traceback" not in done.stderr, done.stderr[-800:]


def test_serve_refuses_a_port_out_of_range_or_taken_in_one_line(tiny_models_dir, monkeypatch, capsys):
    import socket

    from service.__main__ import get_args_parser
    from service.__main__ import main as service_main

    def started(*args):
        raise AssertionError("bentoml serve was started")

    monkeypatch.setattr(os, "execve", started)
    for port in ("70000", "0", "-1"):
        with pytest.raises(SystemExit) as done:
            service_main(["serve", "--port", port, "--models-dir", str(tiny_models_dir)])
        assert done.value.code == 2 and f"'{port}' is not a TCP port" in capsys.readouterr().err
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        argv = ["serve", "--host", "127.0.0.1", "--port", str(port), "--models-dir", str(tiny_models_dir)]
        assert service_main(argv) == 2
    assert f"error: cannot listen on 127.0.0.1:{port}: Address already in use" in capsys.readouterr().err
    monkeypatch.setenv("BENTOML_PORT", "http")
    assert get_args_parser().parse_args(["doctor"]).command == "doctor"  # a bad default stops serve alone


def test_access_log_setting_reaches_bentoml():
    """The env variable picks the service's access-log config in the process BentoML imports it in."""
    probe = "import service.service as s; print(s.Classifier.config['logging']['access']['enabled'])"
    for value, expected in (("on", "True"), ("off", "False"), ("", "False")):
        done = subprocess.run(
            [sys.executable, "-c", probe],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
            env={**os.environ, "CIFAR_ACCESS_LOG": value},
        )
        assert done.returncode == 0 and done.stdout.strip().splitlines()[-1] == expected, done.stderr[-500:]
    done = subprocess.run(
        [sys.executable, "-m", "service", "serve", "--access-log", "loud"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2 and "--access-log" in done.stderr


def test_settings_built_directly_hold_only_their_choices():
    """The doctor and tests build ServiceSettings without the environment: a device or switch outside its
    choices is refused there too, so the typed fields say what they hold."""
    from service.settings import ServiceSettings, SettingsError

    assert ServiceSettings(device="cuda", memory_arena="off").device == "cuda"
    with pytest.raises(SettingsError, match="device must be one of auto, cpu, cuda, got 'gpu'"):
        ServiceSettings(device="gpu")  # type: ignore[arg-type]
    with pytest.raises(SettingsError, match="memory_arena must be one of on, off"):
        ServiceSettings(memory_arena="yes")  # type: ignore[arg-type]


def test_streams_and_threads_share_the_cores():
    from service.settings import ServiceSettings, cpu_count

    cores = cpu_count()
    default = ServiceSettings.from_env({})
    assert (default.inference_streams(), default.intra_op_threads()) == (cores, 1)
    assert (default.inference_streams(on_gpu=True), default.intra_op_threads(on_gpu=True)) == (2, max(1, cores // 2))
    one = ServiceSettings.from_env({"CIFAR_STREAMS": "1"})
    assert (one.inference_streams(), one.intra_op_threads()) == (1, cores)
    both = ServiceSettings.from_env({"CIFAR_STREAMS": "3", "CIFAR_THREADS": "2"})
    assert (both.inference_streams(on_gpu=True), both.intra_op_threads()) == (3, 2)
    # BentoML runs each batch of the sync infer API on one of the service's threads: as many as streams.
    probe = "import service.service as s; print(s.Classifier.config['threads'])"
    done = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "CIFAR_STREAMS": "3"},
    )
    assert done.returncode == 0 and done.stdout.strip().splitlines()[-1] == "3", done.stderr[-500:]


class _CostedModel:
    """A stand-in classifier whose every call advances a fake clock by its batch size times a cost per image."""

    def __init__(self, per_image_s: float) -> None:
        self.per_image_s, self.now, self.batches = per_image_s, 0.0, []

    def logits(self, x: np.ndarray) -> np.ndarray:
        self.batches.append(len(x))
        self.now += len(x) * self.per_image_s
        return np.zeros((len(x), 3), dtype=np.float32)


@pytest.mark.parametrize(
    "per_image_s, expected",
    [(0.001, 256), (0.04, 50), (0.5, 4), (5.0, 1)],  # ResNet-9; WRN multi-crop INT8; WRN FP16 on a CPU; hopeless
)
def test_warm_up_runs_the_largest_batch_its_budget_allows(per_image_s, expected):
    from service.loading import warm_up

    model = _CostedModel(per_image_s)
    ran = warm_up(model, (32, 32), max_batch_size=256, budget_s=2.0, clock=lambda: model.now)
    assert model.batches == ran == ([1, 1, expected] if expected > 1 else [1, 1])


# ---------------------------------------------------------------------------------------------- limits
def test_models_lists_what_one_request_may_hold_and_how_long_it_may_take(server):
    """GET /models' limits name the service's --timeout too: the page waits past it (service/static/app.js), so
    that the service's own 504 comes first."""
    from service.settings import ServiceSettings

    listed = httpx.get(f"{server}/models", timeout=10).json()
    assert listed["limits"] == {
        "max_images": MAX_IMAGES,
        "max_body_bytes": MAX_BODY,
        "max_pixels": MAX_PIXELS,
        "timeout_s": ServiceSettings().timeout_s,  # this server's: the default
    }


def test_the_serve_line_names_an_address_a_browser_opens():
    """It said http://0.0.0.0:3000, where the server listens, which some browsers refuse to open."""
    from service.serve_cli import address

    assert address("0.0.0.0", 3000) == "http://localhost:3000 (listening on 0.0.0.0)"
    assert address("::", 3000) == "http://localhost:3000 (listening on ::)"
    assert address("127.0.0.1", 8080) == "http://127.0.0.1:8080"
    assert address("::1", 8080) == "http://[::1]:8080"

"""The service's other ways in, end to end on one live server: the Open Inference Protocol (driven by the
official tritonclient), JSON on /classify, and the page at / in a real browser (Debian's Chromium through
Playwright). The server runs one inference stream, so that requests from both routes visibly share batches.
"""

from __future__ import annotations

import base64
import codecs
import json
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest

from conftest import ROOT, chromium, extract_jpegs, open_page, running_service

MAX_IMAGES = 8
MAX_BODY = 600_000
TINY_CLASSES = ["alpha", "beta", "gamma"]
ARTIFACTS = ROOT / "test-artifacts"


@pytest.fixture(scope="module")
def server(tiny_models_dir, tmp_path_factory):
    home = tmp_path_factory.mktemp("bentoml_home")
    env = {**os.environ, "BENTOML_HOME": str(home), "BENTOML_DO_NOT_TRACK": "true"}
    args = ["--max-images", str(MAX_IMAGES), "--max-body-bytes", str(MAX_BODY), "--max-pixels", "1000000"]
    log = tmp_path_factory.mktemp("server") / "server.log"
    with running_service(tiny_models_dir, log, *args, "--streams", "1", "--threads", "1", env=env) as url:
        yield url


@pytest.fixture(scope="module")
def jpegs(shared_archive, tmp_path_factory) -> list[Path]:
    return extract_jpegs(shared_archive, tmp_path_factory.mktemp("jpegs"))


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _classify_multipart(url: str, paths: list[Path], **fields) -> dict:
    files = [("images", (p.name, p.read_bytes(), "image/jpeg")) for p in paths]
    response = httpx.post(f"{url}/classify", files=files, data=fields, timeout=30)
    assert response.status_code == 200, response.text
    return response.json()


def _v2_images_body(paths: list[Path], k: int | None = None) -> dict:
    output = {"name": "probabilities", **({"parameters": {"classification": k}} if k else {})}
    return {
        "inputs": [
            {
                "name": "images",
                "shape": [len(paths)],
                "datatype": "BYTES",
                "data": [_b64(p.read_bytes()) for p in paths],
            }
        ],
        "outputs": [output],
    }


def _top_by_index(prediction: dict) -> dict[int, float]:
    return {t["index"]: t["confidence"] for t in prediction["top_k"]}


# ---------------------------------------------------------------------------------------------- tritonclient
def test_tritonclient_speaks_to_the_service(server, jpegs):
    """The official client: health, metadata, infer with BYTES images and with the FP32 tensor, and Triton's
    classification output; its top-1 is /classify's on the same images."""
    import tritonclient.http as triton

    from inference.preprocess import decode_image, to_model_input

    client = triton.InferenceServerClient(url=server.removeprefix("http://"))
    assert client.is_server_live() and client.is_server_ready() and client.is_model_ready("tiny")
    assert "classification" in client.get_server_metadata()["extensions"]
    meta = client.get_model_metadata("tiny")
    assert meta["name"] == "tiny"
    assert {(t["name"], t["datatype"], tuple(t["shape"])) for t in meta["inputs"]} == {
        ("input", "FP32", (-1, 3, 32, 32)),
        ("images", "BYTES", (-1,)),
    }
    assert meta["outputs"] == [{"name": "probabilities", "datatype": "FP32", "shape": [-1, 3]}]

    sent = jpegs[:MAX_IMAGES]
    expected = _classify_multipart(server, sent, k="3")["predictions"]

    images = triton.InferInput("images", [len(sent)], "BYTES")
    images.set_data_from_numpy(np.array([_b64(p.read_bytes()) for p in sent], dtype=object), binary_data=False)
    result = client.infer("tiny", [images], outputs=[triton.InferRequestedOutput("probabilities", binary_data=False)])
    from_bytes = result.as_numpy("probabilities")
    assert from_bytes.shape == (len(sent), 3) and from_bytes.dtype == np.float32
    for row, prediction in zip(from_bytes, expected):
        assert dict(enumerate(row.tolist())) == pytest.approx(_top_by_index(prediction), abs=1e-5)
        assert int(row.argmax()) == prediction["top_k"][0]["index"]

    pixels = to_model_input([decode_image(p.read_bytes(), (32, 32), fit="center_crop") for p in sent])
    tensor = triton.InferInput("input", list(pixels.shape), "FP32")
    tensor.set_data_from_numpy(pixels, binary_data=False)
    ranked = triton.InferRequestedOutput("probabilities", binary_data=False, class_count=2)
    result = client.infer("tiny", [tensor], outputs=[ranked], request_id="tensor-1")
    assert result.get_response()["id"] == "tensor-1"
    classes = result.as_numpy("probabilities")
    assert classes.shape == (len(sent), 2)
    for row, prediction in zip(classes, expected):
        parsed = [(entry.decode() if isinstance(entry, bytes) else entry).split(":") for entry in row]
        assert [int(index) for _, index, _ in parsed] == [t["index"] for t in prediction["top_k"][:2]]
        assert [label for _, _, label in parsed] == [t["label"] for t in prediction["top_k"][:2]]
        assert [float(score) for score, _, _ in parsed] == pytest.approx(
            [t["confidence"] for t in prediction["top_k"][:2]], abs=1e-5
        )

    with pytest.raises(triton.InferenceServerException, match="unknown model 'nope'"):
        client.get_model_metadata("nope")


# ---------------------------------------------------------------------------------------------- JSON /classify
def test_json_classify_answers_as_multipart_does(server, jpegs):
    sent = jpegs[:5]
    body = {
        "images": [{"filename": p.name, "data": _b64(p.read_bytes())} for p in sent],
        "k": 2,
        "model": "tiny-int8",
        "min_confidence": 0.5,
    }
    response = httpx.post(f"{server}/classify", json=body, timeout=30)
    assert response.status_code == 200, response.text
    answer = response.json()
    expected = _classify_multipart(server, sent, k="2", model="tiny-int8", min_confidence="0.5")
    assert answer["model"] == expected["model"] == "tiny-int8"
    assert [p["filename"] for p in answer["predictions"]] == [p.name for p in sent]
    for got, want in zip(answer["predictions"], expected["predictions"]):
        assert _top_by_index(got) == pytest.approx(_top_by_index(want), abs=1e-6)
        assert got["top_k"][0]["label"] == want["top_k"][0]["label"] and got["confident"] == want["confident"]
    # line breaks, as `base64` writes them, are ignored; no filename is an empty one
    wrapped = base64.encodebytes(sent[0].read_bytes()).decode()
    response = httpx.post(f"{server}/classify", json={"images": [{"data": wrapped}]}, timeout=30)
    assert response.status_code == 200 and response.json()["predictions"][0]["filename"] == ""


def test_a_utf8_byte_order_mark_before_json_is_read_on_both_routes(server, jpegs):
    """Some Windows tools write a BOM before JSON text; RFC 8259 lets a parser skip it, and both routes do."""
    data = _b64(jpegs[0].read_bytes())
    headers = {"content-type": "application/json"}
    bom = codecs.BOM_UTF8
    classify_body = bom + json.dumps({"images": [{"data": data}]}).encode()
    classify = httpx.post(f"{server}/classify", content=classify_body, headers=headers, timeout=30)
    assert classify.status_code == 200, classify.text
    v2_body = json.dumps(_images_input([data])).encode()
    plain = httpx.post(f"{server}/v2/models/tiny/infer", content=v2_body, headers=headers, timeout=30)
    marked = httpx.post(f"{server}/v2/models/tiny/infer", content=bom + v2_body, headers=headers, timeout=30)
    assert plain.status_code == marked.status_code == 200, marked.text
    assert marked.json()["outputs"] == plain.json()["outputs"]


def test_fit_reaches_json_classify_and_v2(server, jpegs):
    """A wide photo sent as JSON or as v2 BYTES is fitted as the request says, exactly as multipart's field does."""
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.open(jpegs[0]).convert("RGB").resize((128, 96)).save(buffer, "PNG")
    wide = buffer.getvalue()
    answers = {}
    for fit in ("squash", "pad"):
        files = [("images", ("wide.png", wide, "image/png"))]
        multipart = httpx.post(
            f"{server}/classify", files=files, data={"fit": fit, "k": "3", "model": "tiny"}, timeout=30
        )
        assert multipart.status_code == 200, multipart.text
        answers[fit] = _top_by_index(multipart.json()["predictions"][0])
        body = {"images": [{"filename": "wide.png", "data": _b64(wide)}], "fit": fit, "k": 3, "model": "tiny"}
        as_json = httpx.post(f"{server}/classify", json=body, timeout=30)
        assert as_json.status_code == 200, as_json.text
        assert _top_by_index(as_json.json()["predictions"][0]) == pytest.approx(answers[fit], abs=1e-6)
        v2 = {**_images_input([_b64(wide)]), "parameters": {"fit": fit}}
        response = httpx.post(f"{server}/v2/models/tiny/infer", json=v2, timeout=30)
        assert response.status_code == 200, response.text
        probabilities = response.json()["outputs"][0]["data"]
        assert dict(enumerate(probabilities)) == pytest.approx(answers[fit], abs=1e-6)
    assert answers["squash"] != pytest.approx(answers["pad"], abs=1e-6)  # the fit did reach the decoder


# ---------------------------------------------------------------------------------------------- batching
def _metric(text: str, name: str, **labels) -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_both_routes_go_through_the_same_batching(server, jpegs):
    name = "bentoml_service_adaptive_batch_size"
    before = httpx.get(f"{server}/metrics").text
    v2_body = json.dumps(_v2_images_body(jpegs[:2], k=1))

    def one(i: int) -> httpx.Response:
        if i % 2:
            return httpx.post(f"{server}/v2/models/tiny/infer", content=v2_body, timeout=60)
        files = [("images", (p.name, p.read_bytes(), "image/jpeg")) for p in jpegs[:2]]
        return httpx.post(f"{server}/classify", files=files, timeout=60)

    with ThreadPoolExecutor(16) as pool:
        responses = list(pool.map(one, range(64)))
    assert all(r.status_code == 200 for r in responses), [r.text for r in responses if r.status_code != 200][:2]
    after = httpx.get(f"{server}/metrics").text
    jobs = _metric(after, f"{name}_sum", method_name="infer") - _metric(before, f"{name}_sum", method_name="infer")
    batches = _metric(after, f"{name}_count", method_name="infer") - _metric(
        before, f"{name}_count", method_name="infer"
    )
    assert jobs == 64  # every request of either route was one job of the batchable API
    assert batches < 64  # and jobs that arrived together ran together


# ---------------------------------------------------------------------------------------------- refusals
def _png(size: tuple[int, int]) -> bytes:
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("L", size).save(buffer, "PNG")
    return buffer.getvalue()


def _bomb_png() -> bytes:
    return _png((1500, 1000))


def _lone_surrogate_body(field: str) -> bytes:
    """A valid image whose filename (or a named field) holds "\\udc00": json.loads accepts it, UTF-8 cannot
    encode it, so an answer echoing it failed with a 500."""
    image = {"filename": "cat\udc00.png" if field == "filename" else "cat.png", "data": _b64(_png((32, 32)))}
    body = json.dumps({"images": [image], **({field: "tiny\udc00"} if field != "filename" else {})})
    return body.encode()


def _tensor_input(shape, data, name="input", datatype="FP32") -> dict:
    return {"inputs": [{"name": name, "shape": shape, "datatype": datatype, "data": data}]}


def _images_input(elements: list) -> dict:
    return _tensor_input([len(elements)], elements, name="images", datatype="BYTES")


ZEROS = [0.0] * (3 * 32 * 32)
V2_BAD = {
    # name: (model, body as bytes or JSON-able, status, words expected in the message)
    "not JSON": ("tiny", b"{inputs: [", 400, "not an inference request"),
    "not an object": ("tiny", [1, 2], 400, "not an inference request"),
    "no inputs": ("tiny", {"inputs": []}, 400, "inputs"),
    "two inputs": ("tiny", {"inputs": _images_input(["AA=="])["inputs"] * 2}, 400, "inputs"),
    "unknown field": ("tiny", {**_images_input(["AA=="]), "priority": 1}, 400, "priority"),
    "shape as text": ("tiny", _tensor_input(["1", 3, 32, 32], ZEROS), 400, "shape"),
    "unknown input": ("tiny", _tensor_input([1, 3, 32, 32], ZEROS, name="pixels"), 400, "unknown input 'pixels'"),
    "wrong datatype": ("tiny", _tensor_input([1, 3, 32, 32], ZEROS, datatype="INT8"), 400, "must be FP32, got 'INT8'"),
    "wrong shape": ("tiny", _tensor_input([1, 32, 32, 3], ZEROS), 400, "shape [N, 3, 32, 32]"),
    "data short of shape": ("tiny", _tensor_input([2, 3, 32, 32], ZEROS), 400, "data elements"),
    # one image without its batch axis: its shape's first axis is no count of images
    "one image's shape": ("tiny", _tensor_input([32, 32, 3], ZEROS), 400, "shape [N, 3, 32, 32], got [32, 32, 3]"),
    "model_name of another model": (
        "tiny",
        {**_tensor_input([1, 3, 32, 32], ZEROS), "model_name": "tiny-int8"},
        400,
        "model_name 'tiny-int8'",
    ),
    "ragged data": ("tiny", _tensor_input([1, 3, 32, 32], [[0.0, 0.0], [0.0]]), 400, "regular array"),
    "text data": ("tiny", _tensor_input([1, 3, 32, 32], ["0"] * 3072), 400, "must be numbers"),
    "out of range": ("tiny", _tensor_input([1, 3, 32, 32], [255.0] * 3072), 400, "in [0, 1]"),
    "integer past 64 bits": ("tiny", _tensor_input([1, 3, 32, 32], [10**30] + [0] * 3071), 400, "in [0, 1]"),
    "one past 64 bits among floats": ("tiny", _tensor_input([1, 3, 32, 32], [10**30] + [0.5] * 3071), 400, "in [0, 1]"),
    "no images": ("tiny", _tensor_input([0], [], name="images", datatype="BYTES"), 400, "no images"),
    # within the size limit, but more numbers than MAX_IMAGES images hold: refused before they are parsed
    "more numbers than the most images": ("tiny", _tensor_input([1, 3, 32, 32], [0] * 100_000), 400, "too many images"),
    "too many images": ("tiny", _images_input(["AA=="] * (MAX_IMAGES + 1)), 400, "too many images"),
    "bad base64": ("tiny", _images_input(["not base64!"]), 400, "images[0] is not valid base64"),
    "data URL": ("tiny", _images_input(["data:image/png;base64,AA=="]), 400, "send only the base64 after"),
    "not an image": ("tiny", _images_input([_b64(b"these are not pixels")]), 400, "images[0]: not a readable image"),
    "empty image": ("tiny", _images_input([""]), 400, "images[0] is an empty file"),
    "image over the pixel limit": ("tiny", _images_input([_b64(_bomb_png())]), 413, "over the limit"),
    "body too large": ("tiny", _images_input([_b64(b"\xff" * MAX_BODY)]), 413, "request body too large"),
    "unknown output": ("tiny", {**_images_input(["AA=="]), "outputs": [{"name": "logits"}]}, 400, "'logits'"),
    "classification over the classes": (
        "tiny",
        {**_images_input(["AA=="]), "outputs": [{"name": "probabilities", "parameters": {"classification": 4}}]},
        400,
        "between 1 and 3",
    ),
    "binary extension": (
        "tiny",
        {
            "inputs": [
                {"name": "images", "shape": [1], "datatype": "BYTES", "parameters": {"binary_data_size": 8}, "data": []}
            ]
        },
        400,
        "binary_data=False",
    ),
    "unknown model": ("resnet-9000", _images_input(["AA=="]), 404, "unknown model 'resnet-9000'"),
    "unknown fit": ("tiny", {**_images_input(["AA=="]), "parameters": {"fit": "stretch"}}, 400, "'stretch'"),
    "fit not a string": ("tiny", {**_images_input(["AA=="]), "parameters": {"fit": 2}}, 400, "must be a string"),
}


@pytest.mark.parametrize("case", list(V2_BAD))
def test_bad_inference_requests_are_4xx_with_the_protocol_error(server, jpegs, case):
    model, body, status, words = V2_BAD[case]
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    response = httpx.post(f"{server}/v2/models/{model}/infer", content=content, timeout=30)
    assert response.status_code == status, response.text
    assert list(response.json()) == ["error"] and words in response.json()["error"], response.text
    ok = httpx.post(f"{server}/v2/models/tiny/infer", json=_v2_images_body(jpegs[:1]), timeout=30)
    assert ok.status_code == 200, ok.text


def test_metadata_and_readiness_of_an_unknown_model_are_404(server):
    for path, words in (
        ("/v2/models/nope", "unknown model 'nope'"),
        ("/v2/models/nope/ready", "unknown model 'nope'"),
        ("/v2/models/nope/versions/1/infer", "unknown model 'nope'"),
        ("/v2/models/tiny/versions/2", "no version '2'"),
        ("/v2/models/tiny/versions/2/infer", "no version '2'"),
        ("/v2/models/a/b/infer", "no such route"),  # a name cannot hold '/'
        ("/v2/models/tiny/infer/", "no such route"),
        ("/v2/models", "GET /models lists this service's"),  # answered, not redirected to the next one
        ("/v2/models/", "GET /models lists this service's"),
        # tritonclient's get_inference_statistics: an extension this server does not have, not a model "stats"
        ("/v2/models/stats", "does not implement Triton's statistics extension"),
        ("/v2/models/tiny/stats", "does not implement Triton's statistics extension"),
        ("/v2/models/tiny/versions/1/stats", "does not implement Triton's statistics extension"),
    ):
        method = httpx.post if path.rstrip("/").endswith("infer") else httpx.get
        response = method(f"{server}{path}", timeout=10)  # httpx follows no redirect unless told
        assert response.status_code == 404 and words in response.json()["error"], (path, response.text)
    assert httpx.get(f"{server}/v2/health/live").status_code == 200
    assert httpx.get(f"{server}/v2/models/tiny-int8/ready").status_code == 200
    import tritonclient.http as triton
    from tritonclient.utils import InferenceServerException

    client = triton.InferenceServerClient(url=server.removeprefix("http://"))
    with pytest.raises(InferenceServerException, match="statistics extension"):
        client.get_inference_statistics()


def test_a_model_answers_at_its_one_version(server, jpegs):
    """The protocol's /versions/<v>/ paths and tritonclient's model_version: each model has version "1"."""
    import tritonclient.http as triton

    meta = httpx.get(f"{server}/v2/models/tiny/versions/1", timeout=10).json()
    assert meta["name"] == "tiny" and meta["versions"] == ["1"]
    assert httpx.get(f"{server}/v2/models/tiny/versions/1/ready", timeout=10).status_code == 200
    plain = httpx.post(f"{server}/v2/models/tiny/infer", json=_v2_images_body(jpegs[:2]), timeout=30).json()
    pinned = httpx.post(f"{server}/v2/models/tiny/versions/1/infer", json=_v2_images_body(jpegs[:2]), timeout=30)
    assert pinned.status_code == 200 and pinned.json() == plain and plain["model_version"] == "1"

    client = triton.InferenceServerClient(url=server.removeprefix("http://"))
    assert client.is_model_ready("tiny", "1") and not client.is_model_ready("tiny", "2")
    images = triton.InferInput("images", [1], "BYTES")
    images.set_data_from_numpy(np.array([_b64(jpegs[0].read_bytes())], dtype=object), binary_data=False)
    result = client.infer("tiny", [images], model_version="1")
    assert result.get_response()["model_version"] == "1"


def test_a_binary_tensor_request_is_refused_saying_so(server, jpegs):
    """tritonclient sends its inputs as raw bytes after the JSON unless told binary_data=False."""
    import tritonclient.http as triton

    client = triton.InferenceServerClient(url=server.removeprefix("http://"))
    tensor = triton.InferInput("input", [1, 3, 32, 32], "FP32")
    tensor.set_data_from_numpy(np.zeros((1, 3, 32, 32), dtype=np.float32))  # binary by default
    with pytest.raises(triton.InferenceServerException, match="binary_data=False"):
        client.infer("tiny", [tensor])


def test_infer_with_the_wrong_method_is_405_not_an_unknown_model(server):
    for method in ("GET", "PUT"):
        for path in ("/v2/models/tiny/infer", "/v2/models/tiny/versions/1/infer"):
            response = httpx.request(method, f"{server}{path}", timeout=10)
            assert response.status_code == 405 and response.headers["allow"] == "OPTIONS, POST", (method, response.text)
            assert "not allowed" in response.json()["error"]
    for path, allowed in (("/v2/models/tiny/infer", "OPTIONS, POST"), ("/v2/models/tiny", "GET, HEAD, OPTIONS")):
        response = httpx.options(f"{server}{path}", timeout=10)  # what the route takes, not a plain-text 405
        assert response.status_code == 204 and response.headers["allow"] == allowed, (path, response.text)


def test_a_wrong_method_on_an_api_path_names_every_method_the_path_takes(server):
    """GET lists the models and POST is BentoML's API: a 405 naming POST alone would hide the listing, and
    BentoML's own 405 (plain text, OPTIONS included) is not the contract's refusal."""
    for path, allowed in (
        ("/models", "GET, HEAD, POST, OPTIONS"),
        ("/classify", "POST, OPTIONS"),
        ("/infer", "POST, OPTIONS"),
    ):
        for method in ("DELETE", "PUT", "PATCH", "GET") if path != "/models" else ("DELETE", "PUT", "PATCH"):
            response = httpx.request(method, f"{server}{path}", timeout=10)
            assert response.status_code == 405 and response.headers["allow"] == allowed, (path, method)
            body = response.json()
            assert body["reason"] == "method_not_allowed" and method in body["error"], (path, body)
        options = httpx.options(f"{server}{path}", timeout=10)
        assert options.status_code == 204 and options.headers["allow"] == allowed, (path, options.text)
    assert httpx.get(f"{server}/models", timeout=10).status_code == 200


JSON_BAD = {
    # name: (body as bytes or JSON-able, status, reason, words expected in the message)
    "not JSON": (b'{"images": [', 400, "malformed_request", "could not be parsed"),
    "not an object": ([], 400, "malformed_request", "must be an object"),
    "unknown field": ({"images": [], "top": 3}, 400, "malformed_request", "'top'"),
    "images not a list": ({"images": "cat.jpg"}, 400, "malformed_request", "must be a list"),
    "image without data": ({"images": [{"filename": "a.jpg"}]}, 400, "malformed_request", "images[0]"),
    "no images": ({"images": []}, 400, "no_images", "no images"),
    "too many images": ({"images": [{"data": "AA=="}] * (MAX_IMAGES + 1)}, 400, "too_many_images", "at most 8"),
    "bad base64": (
        {"images": [{"filename": "ok.jpg", "data": "AA=="}, {"filename": "cat.jpg", "data": "c@t"}]},
        400,
        "bad_encoding",
        "images[1] ('cat.jpg')",
    ),
    "not an image": ({"images": [{"filename": "x.jpg", "data": _b64(b"not pixels")}]}, 400, "not_an_image", "x.jpg"),
    "an image of an unreadable format": (
        {"images": [{"data": _b64(b"%PDF-1.4 not an image")}]},
        400,
        "not_an_image",
        "readable formats: JPEG, PNG",
    ),
    "image with an unknown field": (
        {"images": [{"data": "AA==", "size": 3}]},
        400,
        "malformed_request",
        "images[0]: unknown field(s) 'size'",
    ),
    "image data not a string": ({"images": [{"data": 12}]}, 400, "malformed_request", "got a number"),
    "image not an object": ({"images": ["AA=="]}, 400, "malformed_request", "images[0] must be an object"),
    "data URL": (
        {"images": [{"data": "data:image/png;base64,AA=="}]},
        400,
        "bad_encoding",
        "send only the base64 after 'base64,'",
    ),
    "URL-safe base64": ({"images": [{"data": "_-8="}]}, 400, "bad_encoding", "use the standard alphabet"),
    "image over the pixel limit": ({"images": [{"data": _b64(_bomb_png())}]}, 413, "image_too_large", "limit"),
    "body too large": ({"images": [{"data": _b64(b"\xff" * MAX_BODY)}]}, 413, "body_too_large", "too large"),
    "k as text": ({"images": [{"data": "AA=="}], "k": "3"}, 400, "bad_k", "JSON integer"),
    "k too big": ({"images": [{"data": "AA=="}], "k": 4}, 400, "bad_k", "between 1 and 3"),
    "unknown model": ({"images": [{"data": "AA=="}], "model": "nope"}, 404, "unknown_model", "'nope'"),
    "unknown fit": ({"images": [{"data": "AA=="}], "fit": "stretch"}, 400, "bad_fit", "'stretch'"),
    "fit not a string": ({"images": [{"data": "AA=="}], "fit": 1}, 400, "bad_fit", "fit name"),
    "filename with a lone surrogate": (_lone_surrogate_body("filename"), 400, "malformed_request", "\\udc00"),
    "model with a lone surrogate": (_lone_surrogate_body("model"), 400, "malformed_request", "\\udc00"),
    # Python's JSON parser raises RecursionError, not ValueError, on brackets nested a thousand deep (deeper, a
    # body holds more values than the largest request: refused as nested before it is parsed)
    "nested too deep": (b'{"images": ' + b"[" * 1_000 + b"]" * 1_000 + b"}", 400, "malformed_request", "deep"),
    # a JSON integer has no size limit: float() of one past 1e308 overflows
    "huge min_confidence": (
        b'{"images": [{"data": "AA=="}], "min_confidence": 1' + b"0" * 400 + b"}",
        400,
        "bad_min_confidence",
        "a number of 401 digits",
    ),
    "integer min_confidence over 1": (
        {"images": [{"data": "AA=="}], "min_confidence": 2},
        400,
        "bad_min_confidence",
        "got 2",
    ),
    # json.loads keeps the last of a repeated key; the form refuses a repeated field (for the same reason as a
    # bad value of it), so JSON does too
    "k given twice": (b'{"images": [{"data": "AA=="}], "k": 2, "k": 3}', 400, "bad_k", "'k' given 2 times"),
    "fit given twice": (b'{"images": [{"data": "AA=="}], "fit": "pad", "fit": "pad"}', 400, "bad_fit", "'fit' given"),
    "images given twice": (b'{"images": [], "images": [{"data": "AA=="}]}', 400, "malformed_request", "'images' given"),
    "an image's data given twice": (
        b'{"images": [{"data": "AA==", "data": "AA=="}]}',
        400,
        "malformed_request",
        "images[0]: 'data' given 2 times",
    ),
}


@pytest.mark.parametrize("case", list(JSON_BAD))
def test_bad_json_classify_requests_are_4xx_with_a_reason(server, jpegs, case):
    body, status, reason, words = JSON_BAD[case]
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    response = httpx.post(
        f"{server}/classify", content=content, headers={"content-type": "application/json"}, timeout=30
    )
    assert response.status_code == status, response.text
    assert response.json()["reason"] == reason and words in response.json()["error"], response.text


# ---------------------------------------------------------------------------------------------- the document
def test_the_openapi_document_lists_the_new_routes(server):
    spec = httpx.get(f"{server}/docs.json").json()
    for path in ("/v2", "/v2/health/live", "/v2/health/ready", "/v2/models/{name}", "/v2/models/{name}/ready", "/"):
        assert "get" in spec["paths"][path], path
    infer = spec["paths"]["/v2/models/{name}/infer"]["post"]
    assert infer["parameters"][0]["schema"]["enum"] == ["tiny", "tiny-int8"]
    assert {"200", "400", "404", "413"} <= set(infer["responses"])
    assert "Content-Encoding" in infer["responses"]["415"]["description"]  # the only 415: JSON whatever its type
    assert {"415", "504"} <= set(spec["paths"]["/classify"]["post"]["responses"])
    assert spec["info"]["version"] == httpx.get(f"{server}/v2", timeout=10).json()["version"] != "None"
    assert "InferRequest" in spec["components"]["schemas"]
    assert "Authorization" not in infer.get("description", "")  # no keys configured
    pinned = spec["paths"]["/v2/models/{name}/versions/{version}/infer"]["post"]
    assert [p["name"] for p in pinned["parameters"]] == ["name", "version"] and pinned["operationId"].endswith(
        "_version"
    )
    assert "get" in spec["paths"]["/v2/models/{name}/versions/{version}/ready"]
    json_body = spec["paths"]["/classify"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert json_body["properties"]["images"]["maxItems"] == MAX_IMAGES
    assert json_body["properties"]["images"]["items"]["required"] == ["data"]
    cross = httpx.get(f"{server}/models", headers={"Origin": "http://page.example"})
    assert "access-control-allow-origin" not in cross.headers  # CORS is off unless configured
    docs = httpx.get(f"{server}/docs")
    assert docs.status_code == 200 and "swagger" in docs.text.lower()  # BentoML's UI, moved from /


def test_an_inference_request_past_the_timeout_is_a_504_the_document_lists(tiny_models_dir, tmp_path):
    """BentoML's --timeout covers the protocol's routes too: a request not answered in time is its 504 {"error"},
    which the document listed for /classify and /infer but not for /v2/models/NAME/infer (an undocumented status,
    to schemathesis and to clients generated from the document)."""
    import socket
    import time

    env = {**os.environ, "BENTOML_HOME": str(tmp_path / "home"), "BENTOML_DO_NOT_TRACK": "true"}
    with running_service(tiny_models_dir, tmp_path / "server.log", "--timeout", "1", env=env) as url:
        spec = httpx.get(f"{url}/docs.json", timeout=10).json()
        for path in ("/v2/models/{name}/infer", "/v2/models/{name}/versions/{version}/infer"):
            timed_out = spec["paths"][path]["post"]["responses"]["504"]
            assert timed_out["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/OipError"}
        # a body trickled in, each byte well within the stall limit, the whole past the timeout
        host, port = url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=10) as sock:
            head = "POST /v2/models/tiny/infer HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            sock.sendall(f"{head}Content-Length: 100\r\n\r\n".encode())
            sock.settimeout(0.25)
            answer, deadline = b"", time.monotonic() + 10
            while b"\r\n\r\n{" not in answer and time.monotonic() < deadline:
                try:
                    answer += sock.recv(4096)
                except socket.timeout:
                    sock.sendall(b" ")
    status, _, body = answer.partition(b"\r\n\r\n")
    assert status.startswith(b"HTTP/1.1 504"), answer
    assert set(json.loads(body[: body.rindex(b"}") + 1])) == {"error"}, answer


# ---------------------------------------------------------------------------------------------- the page
def test_the_api_ui_renders_the_document_and_fetches_nothing_from_elsewhere(server):
    """BentoML's API UI page (/docs) embedded Google Tag Manager: opening it told a third party. The snippet is
    cut and a policy keeps every fetch on this server; Swagger UI still renders the service's operations."""
    response = httpx.get(f"{server}/docs", timeout=10)
    assert response.status_code == 200 and "googletagmanager" not in response.text
    assert "default-src 'self'" in response.headers["content-security-policy"]
    requested: list[str] = []
    with chromium() as browser:
        page = browser.new_page()
        page.on("request", lambda request: requested.append(request.url))
        errors: list[str] = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.goto(f"{server}/docs")
        page.get_by_text("/classify", exact=True).first.wait_for(timeout=30_000)
    assert not errors, errors
    elsewhere = [url for url in requested if not url.startswith((server, "data:"))]
    assert requested and not elsewhere, elsewhere


def test_the_page_classifies_a_dropped_jpeg_in_a_real_browser(server, jpegs):
    """Headless Chromium opens /, picks a real JPEG through the labelled file input, and the bars it draws
    say what /classify says; nothing is fetched from anywhere but the service. Screenshot:
    test-artifacts/page.png."""
    image = jpegs[0]
    expected = _classify_multipart(server, [image], k="3")["predictions"][0]["top_k"]
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "page.png"
    requested: list[str] = []
    with open_page(server, height=700, requested=requested) as (page, errors):
        model = page.get_by_label("Model")  # controls are found by their labels, as a screen reader does
        assert model.input_value() == "tiny"
        assert page.get_by_label("Classes shown per image").input_value() == "3"
        assert not page.locator("#key-field").is_visible()  # no keys configured: no key asked for
        page.keyboard.press("Tab")  # the first stop is the model choice: reachable without a mouse
        assert page.evaluate("document.activeElement.id") == "model"
        page.get_by_label("Choose images").set_input_files(str(image))
        page.wait_for_selector(".bars li", timeout=20_000)
        rows = page.eval_on_selector_all(
            ".bars li", "rows => rows.map(r => [r.dataset.label, Number(r.dataset.confidence), r.innerText])"
        )
        widths = page.eval_on_selector_all(".bars .fill", "bars => bars.map(b => b.style.width)")
        status = page.locator("#status").inner_text()
        page.screenshot(path=str(shot), full_page=True)
    assert not errors, errors
    assert [label for label, _, _ in rows] == [t["label"] for t in expected]
    assert [c for _, c, _ in rows] == pytest.approx([t["confidence"] for t in expected], abs=1e-6)
    assert all(label in text and "%" in text for label, _, text in rows)
    assert [float(w.rstrip("%")) for w in widths] == pytest.approx([100 * t["confidence"] for t in expected], abs=0.06)
    assert "1 of 1 image classified by tiny" in status
    assert requested and all(url.startswith(server) or url.startswith("blob:") for url in requested), requested
    assert shot.stat().st_size > 10_000
    print(f"screenshot: {shot}")


def test_the_page_sends_the_fit_and_threshold_chosen_and_says_the_limits(server, jpegs):
    """The page's fit and "unsure below" controls reach /classify as `fit` and `min_confidence`, each card
    says what the service answered for the threshold, a threshold that is no percentage is refused on the
    page, and the hint gives the service's limits in numbers."""
    sent: list[bytes] = []

    def classify(route):
        sent.append(route.request.post_data_buffer or b"")
        route.continue_()

    image = jpegs[0]
    top1 = _classify_multipart(server, [image], k="1")["predictions"][0]["top_k"][0]["confidence"]
    threshold = round(100 * top1, 1) + 0.1  # just above this image's top-1: unsure
    with open_page(server, classify=classify) as (page, errors):
        limits = page.inner_text("#limits-hint")
        fits = page.eval_on_selector_all("#fit option", "o => o.map(x => [x.value, x.text])")
        fit_info = page.inner_text("#fit-info")
        page.get_by_label("Mark unsure below (%)").fill(str(threshold))
        page.get_by_label("Choose images").set_input_files(str(image))
        _wait_for_status(page, "1 of 1")
        first_mark = page.inner_text(".mark")
        page.get_by_label("Mark unsure below (%)").fill("")
        page.select_option("#fit", "pad")
        _wait_for_status(page, "1 of 1")
        marks_when_off = page.locator(".mark").count()
        page.get_by_label("Mark unsure below (%)").fill("150")
        page.get_by_label("Mark unsure below (%)").press("Tab")
        page.wait_for_timeout(300)
        refusal = page.inner_text("#error")
    assert not errors, errors
    assert limits == "up to 0.572 MiB and 1 megapixels each", limits  # MAX_BODY, --max-pixels 1000000
    assert [value for value, _ in fits] == ["", "center_crop", "squash", "pad"], fits
    assert fits[0][1] == "the model's own (center_crop)" and fit_info.startswith("center_crop: "), (fits, fit_info)
    minimum = f'name="min_confidence"\r\n\r\n{threshold / 100}'
    assert minimum.encode() in sent[0] and b'name="fit"' not in sent[0], sent[0][-300:]
    assert first_mark.startswith("unsure: under"), first_mark
    assert b'name="fit"\r\n\r\npad\r\n' in sent[1] and b"min_confidence" not in sent[1], sent[1][-300:]
    assert marks_when_off == 0 and len(sent) == 2  # the refused threshold sent nothing
    assert "percentage from 0 to 100" in refusal, refusal


def _wait_for_status(page, start: str, seconds: float = 30) -> None:
    """Poll the page's status line from here: the page's policy forbids evaluating strings, which
    wait_for_function does for an expression."""
    import time

    deadline = time.monotonic() + seconds
    while not page.inner_text("#status").startswith(start):
        assert time.monotonic() < deadline, f"status {page.inner_text('#status')!r}, waiting for {start!r}"
        page.wait_for_timeout(100)


def test_the_page_survives_its_users_and_odd_answers_in_a_real_browser(server, jpegs):
    """What a person does on the page, against the real service with some answers replaced (Playwright's
    routes): Enter in the key field does not put the key in the URL; k offers no more than the model's
    classes; the file button shows keyboard focus; an overloaded answer is asked again after Retry-After; a
    200 that is not the service's answer is an error on its card, not a page stuck at "Classifying"; the same
    file chosen again runs again; and a model changed mid-run stops the old run, whose late answers change
    nothing."""
    held, seen, odd = [], {"tiny": 0, "tiny-int8": 0}, {"login": 1, "busy": 1}

    def classify(route):
        model = (
            "tiny-int8" if b'name="model"\r\n\r\ntiny-int8\r\n' in (route.request.post_data_buffer or b"") else "tiny"
        )
        seen[model] += 1
        if odd["login"]:  # a proxy's login page, with a 200
            odd["login"] -= 1
            return route.fulfill(status=200, content_type="text/html", body="<html>sign in</html>")
        if odd["busy"]:
            odd["busy"] -= 1
            return route.fulfill(
                status=503, headers={"Retry-After": "1"}, json={"error": "busy", "reason": "overloaded"}
            )
        if model == "tiny" and holding[0]:
            return held.append(route)  # answered only after the model has changed
        return route.continue_()

    holding = [False]
    status = "#status"
    with open_page(server, classify=classify) as (page, errors):
        # The tiny models have 3 classes: k = 5 would be refused for every image.
        assert page.eval_on_selector_all("#k option", "o => o.map(x => x.value)") == ["1", "3"]
        page.evaluate("document.getElementById('key-field').hidden = false")
        page.get_by_label("API key").fill("s3cret")
        page.get_by_label("API key").press("Enter")
        page.wait_for_timeout(300)
        assert page.url == f"{server}/" and "s3cret" not in page.url
        page.evaluate("document.getElementById('api-key').value = ''")
        page.focus("#files")
        page.keyboard.press("Shift+Tab")
        page.keyboard.press("Tab")  # focus by keyboard: :focus-visible
        outline = page.eval_on_selector("label[for=files]", "l => getComputedStyle(l).outlineStyle")
        assert outline != "none"
        chooser = page.get_by_label("Choose images")
        chooser.set_input_files(str(jpegs[0]))  # the login page: an error on the card
        _wait_for_status(page, "0 of 1")
        assert "Not an answer of this service (200, text/html" in page.inner_text(".answer.error")
        chooser.set_input_files(str(jpegs[0]))  # the same file again: 503 once, then answered
        _wait_for_status(page, "1 of 1")
        assert page.locator(".bars li").count() == 3
        holding[0] = True
        chooser.set_input_files([str(p) for p in jpegs[:6]])
        page.wait_for_timeout(500)
        before = seen["tiny"]
        page.select_option("#model", "tiny-int8")
        _wait_for_status(page, "6 of 6 images classified by tiny-int8")
        for route in held:  # the old run's answers arrive late
            try:
                route.continue_()
            except Exception:  # aborted by the page: nothing to answer
                pass
        page.wait_for_timeout(1000)
        final = page.inner_text(status)
        bars = page.locator(".bars").count()
    assert not errors, errors
    assert final.startswith("6 of 6 images classified by tiny-int8") and bars == 6, final
    assert 1 <= len(held) <= 4 and seen["tiny"] == before  # no request of the old model after the change


# ---------------------------------------------------------------------------------------------- /v2's cost
def _oip_model():
    from types import SimpleNamespace

    return SimpleNamespace(
        classes=TINY_CLASSES,
        size=(32, 32),
        entry=SimpleNamespace(name="tiny", input=SimpleNamespace(name="input", fit="pad")),
    )


@pytest.mark.parametrize("element", [b"0.5", b"0", b"[]", b'"ab"'])
def test_a_v2_body_of_more_values_than_the_largest_request_is_refused_before_it_is_parsed(element):
    """Parsed, each JSON value is a Python object ten times its size in the body: a body within the size limit
    must not cost more than the largest request the model takes before it is refused."""
    import tracemalloc

    from service.oip import read_infer_request

    head = b'{"inputs": [{"name": "input", "shape": [2, 3, 32, 32], "datatype": "FP32", "data": ['
    body = head + b",".join([element] * 1_000_000) + b"]}]}"
    tracemalloc.start()
    try:
        refused = read_infer_request(body, _oip_model(), max_images=2)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert getattr(refused, "reason", None) == "too_many_images", refused
    assert "at most 2 per request" in refused.message
    assert peak < len(body) // 10, peak


@pytest.mark.parametrize("nested", [False, True])
def test_the_largest_v2_tensor_request_is_read(nested):
    """The bound on a body's values lets through the most images of the model's input, nested along every axis,
    with the rest of the request around them."""
    from service.oip import read_infer_request

    pixels = np.random.default_rng(0).random((2, 3, 32, 32)).astype(np.float32)
    body = {
        "id": "a, b, [c], {d}",
        "parameters": {"note": ",".join(["x"] * 100)},
        "inputs": [
            {
                "name": "input",
                "shape": [2, 3, 32, 32],
                "datatype": "FP32",
                "data": pixels.tolist() if nested else pixels.ravel().tolist(),
            }
        ],
        "outputs": [{"name": "probabilities", "parameters": {"classification": 2}}],
    }
    plan = read_infer_request(json.dumps(body).encode(), _oip_model(), max_images=2)
    assert not hasattr(plan, "reason"), plan
    assert plan.inputs.shape == (2, 3, 32, 32) and np.array_equal(plan.inputs, pixels)
    assert plan.id == body["id"] and plan.outputs == [("probabilities", 2)]


# ---------------------------------------------------------------------------------------------- JSON bodies' cost
def _classify_json():
    """What reads a /classify JSON body (taking at most 2 images), and its most images."""
    from service.classify_json import classify_json_fields

    return lambda body: classify_json_fields(body, max_images=2), 2


def _infer_json():
    """What reads an /infer body, and its most items."""
    from service.request_bodies import InferInput
    from service.startup import SETTINGS

    return InferInput.parse, SETTINGS.max_batch_size


JSON_ROUTES = {"classify": (b'{"images": [', _classify_json), "infer": (b'{"items": [', _infer_json)}


@pytest.mark.parametrize("element", [b"0.5", b"[]", b"{}", b'"ab"'])
@pytest.mark.parametrize("route", JSON_ROUTES)
def test_a_json_body_of_more_values_than_the_largest_request_is_refused_before_it_is_parsed(route, element):
    """/classify's JSON and /infer's body were parsed whole before their lists' length was checked: a 32 MB body
    of numbers or empty arrays took seconds and hundreds of MB (/infer's over a GB) before it was refused. As on
    /v2, a body holding more values than the largest request is refused first."""
    import tracemalloc

    head, reader = JSON_ROUTES[route]
    read, most = reader()  # imported before memory is traced
    body = head + b",".join([element] * 1_000_000) + b"]}"
    tracemalloc.start()
    try:
        refused = read(body)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert getattr(refused, "reason", None) == "too_many_images", refused
    assert f"at most {most} per request" in refused.message
    assert peak < len(body) // 10, peak


@pytest.mark.parametrize("opening", [b"[", b'[{"a": '])
@pytest.mark.parametrize("route", [*JSON_ROUTES, "v2"])
def test_a_deeply_nested_json_body_is_refused_as_nested_not_as_too_many_images(route, opening):
    """A body of 100,000 '[' was refused as "too many images: ... this body has 100000 ','...": each bracket counted
    as a value. It is malformed, and said so."""
    from service.oip import read_infer_request

    readers = {route: reader()[0] for route, (_, reader) in JSON_ROUTES.items()}
    readers["v2"] = lambda body: read_infer_request(body, _oip_model(), max_images=2)
    refused = readers[route](opening * 100_000)
    assert getattr(refused, "reason", None) == "malformed_request", refused
    assert refused.message == "the JSON body nests arrays or objects deeper than 200 levels", refused


@pytest.mark.parametrize("route", [*JSON_ROUTES, "v2"])
def test_a_json_body_with_a_string_never_closed_is_refused_as_malformed_not_as_too_many_images(route):
    """A body over the bound on its values whose brackets follow a quote never closed (``["[[[...``) was refused
    as "too many images": its brackets were read as a string's, so not as nesting. It is not JSON, and said so."""
    from service.oip import read_infer_request

    readers = {route: reader()[0] for route, (_, reader) in JSON_ROUTES.items()}
    readers["v2"] = lambda body: read_infer_request(body, _oip_model(), max_images=2)
    refused = readers[route](b'{"a": ["\\\\\\"' + b"[" * 100_000 + b"]}")
    assert getattr(refused, "reason", None) == "malformed_request", refused
    assert refused.message == "the JSON body could not be parsed: a string in it is never closed", refused


@pytest.mark.parametrize("encoding", ["utf-8", "utf-16-le", "utf-32"])
def test_a_valid_json_body_over_the_bound_on_its_values_is_refused_as_too_many_images(encoding):
    """Valid JSON leaves no string open, whatever its escapes, in any encoding json.loads reads: in UTF-16 a
    character may hold a '"' byte (U+0122 does) that closes no string."""
    read, most = _classify_json()
    body = json.dumps({"images": ['\u0122 \\" \\', "\u0122", *[0] * 2000]}, ensure_ascii=False)
    refused = read(body.encode(encoding))
    assert getattr(refused, "reason", None) == "too_many_images", refused
    assert f"at most {most} per request" in refused.message


def test_brackets_inside_strings_do_not_count_as_nesting():
    """Only a body's arrays and objects nest: a file name of brackets (an escaped quote and backslash among them)
    is no deeper than the body around it."""
    from service.body_limits import MAX_DEPTH, structure_fault

    name = "[" * MAX_DEPTH + '\\" \\\\' + "{" * 10_000
    body = json.dumps({"images": [{"filename": name, "data": "AA=="}] * 3}).encode()
    assert structure_fault(body, 3) is None
    assert structure_fault(body, 2) == "nested"
    assert structure_fault(b" [" * MAX_DEPTH + b'["]",', MAX_DEPTH) == "nested"  # the string closes no array


def test_a_run_of_backslashes_at_a_chunk_edge_is_passed_by_a_search():
    """A chunk read for the body's depth is never cut inside an escape: it was stretched past a run of
    backslashes a byte at a time, 6 s of the worker's time for a body of 50 MB of them after a quote and a
    thousand commas. Counted here as the body's bytes read one at a time, not as time."""
    from service import body_limits

    class Counted(bytes):
        reads = 0

        def __getitem__(self, index):
            if isinstance(index, int):
                Counted.reads += 1
            return super().__getitem__(index)

    body = Counted(b'["' + b"\\" * 100_000 + b'", "\\"[", ' + b"[" * 9)
    assert body_limits.structure_fault(body, 10) is None  # the escaped quote and bracket are the string's
    assert body_limits.structure_fault(body, 9) == "nested"
    assert body_limits.structure_fault(Counted(b'["' + b"\\" * 100_000), 10) == "unclosed"
    assert Counted.reads < 100


def test_the_largest_json_classify_request_is_read():
    """The bound on a /classify body's values lets through the most images, every field given, and file names
    holding commas and brackets."""
    from service.body_limits import ENVELOPE_VALUES
    from service.classify_json import classify_json_fields
    from service.uploads import Upload

    most = 4
    names = [f"photo {i}, [{'x,' * (ENVELOPE_VALUES // (2 * most))}].png" for i in range(most)]
    body = {
        "images": [{"filename": name, "data": _b64(bytes([i]) * 3000)} for i, name in enumerate(names)],
        "k": 2,
        "model": "tiny",
        "min_confidence": 0.5,
        "fit": "pad",
    }
    read = classify_json_fields(json.dumps(body).encode(), most)
    assert read == {
        "k": 2,
        "model": "tiny",
        "min_confidence": 0.5,
        "fit": "pad",
        "images": [Upload(name, bytes([i]) * 3000) for i, name in enumerate(names)],
    }, read


def test_file_names_full_of_commas_do_not_count_as_json_values():
    """Only a body's values count against its bound: commas and brackets inside its strings (file names here,
    escaped quotes among them) used to count too, and a request of a few images named so was refused."""
    from service.body_limits import ENVELOPE_VALUES
    from service.classify_json import classify_json_fields
    from service.uploads import Upload

    most = 4
    names = [f'photo {i} \\" [{"x,{" * ENVELOPE_VALUES}].png' for i in range(most)]
    body = {"images": [{"filename": name, "data": _b64(bytes([i]) * 300)} for i, name in enumerate(names)]}
    read = classify_json_fields(json.dumps(body).encode(), most)
    assert read == {"images": [Upload(name, bytes([i]) * 300) for i, name in enumerate(names)]}, read


def test_the_largest_infer_request_is_read():
    """The bound on an /infer body's values lets through the most items a batch takes, every field given."""
    from service.request_bodies import InferInput
    from service.startup import SETTINGS

    most = SETTINGS.max_batch_size
    pixels = [bytes([i % 256]) * (32 * 32 * 3) for i in range(most)]
    body = {"items": [{"model": "tiny", "pixels": _b64(p), "dtype": "uint8"} for p in pixels]}
    read = InferInput.parse(json.dumps(body).encode())
    assert isinstance(read, InferInput), read
    assert [item.pixels for item in read.items] == pixels and {item.model for item in read.items} == {"tiny"}

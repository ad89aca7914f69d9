"""Requests a client plausibly sends that the service answered wrongly or unclearly: each is refused for what it is,
in the client's own words, or read as the protocol means it."""

from __future__ import annotations

import asyncio
import base64
import codecs
import json
from types import SimpleNamespace

import pytest

from service.classify_json import classify_json_fields
from service.confidence import parse_min_confidence
from service.contract import Rejection
from service.oip import read_infer_request

MODEL = SimpleNamespace(
    classes=["alpha", "beta", "gamma"],
    size=(32, 32),
    entry=SimpleNamespace(name="tiny", input=SimpleNamespace(name="input", fit="squash")),
)
IMAGE = base64.b64encode(b"\x89PNG not really").decode()


def _v2(**body) -> bytes:
    request = {"inputs": [{"name": "images", "shape": [1], "datatype": "BYTES", "data": [IMAGE]}], **body}
    return json.dumps(request).encode()


def _top(k) -> list[dict]:
    return [{"name": "probabilities", "parameters": {"classification": k}}]


@pytest.mark.parametrize("k", [0, -1, 4])
def test_a_v2_classification_outside_the_classes_is_a_bad_k_whichever_side(k):
    """0 and -1 were "not an inference request: ... greater than or equal to 1" (malformed_request), 4 a bad k."""
    refused = read_infer_request(_v2(outputs=_top(k)), MODEL, 4)
    assert isinstance(refused, Rejection)
    assert (refused.reason, refused.message) == (
        "bad_k",
        f"classification must be between 1 and 3 (the model's classes), got {k}",
    )


def test_a_v2_shape_copied_from_the_metadata_says_what_its_minus_one_means():
    body = _v2()
    refused = read_infer_request(body.replace(b'"shape": [1]', b'"shape": [-1]'), MODEL, 4)
    assert isinstance(refused, Rejection) and refused.reason == "bad_tensor", refused
    assert "[-1]" in refused.message and "-1 in the model's metadata means any size" in refused.message


def test_a_v2_request_with_an_empty_outputs_list_gets_every_output():
    """The protocol's "not specified" (Triton answers an empty list as an absent one): it was refused."""
    plan = read_infer_request(_v2(outputs=[]), MODEL, 4)
    assert not isinstance(plan, Rejection), plan
    assert plan.outputs == [("probabilities", None)]


def test_a_v2_fit_that_is_no_string_is_named_as_json_writes_it():
    refused = read_infer_request(_v2(parameters={"fit": True}), MODEL, 4)
    assert isinstance(refused, Rejection) and refused.message == "parameter 'fit' must be a string, got true"


@pytest.mark.parametrize(
    "field, value, said",
    [
        ("k", True, "'k' must be a JSON integer, got true"),
        ("model", ["a"], "'model' must be a model name (a string) or null, got [\"a\"]"),
        ("fit", {"a": 1}, "'fit' must be a fit name (a string) or null, got {\"a\": 1}"),
        ("min_confidence", False, "'min_confidence' must be a JSON number from 0 to 1, or null, got false"),
    ],
)
def test_a_json_field_of_the_wrong_type_is_named_as_the_client_wrote_it(field, value, said):
    """Python's spelling (True, ['a'], {'a': 1}) is not what a JSON client sent."""
    refused = classify_json_fields(json.dumps({"images": [], field: value}).encode(), 4)
    assert isinstance(refused, Rejection) and refused.message == said


def test_a_threshold_that_is_no_number_is_named_as_json_writes_it():
    with pytest.raises(ValueError, match=r"^must be a number from 0 to 1, got \[0\.5\]$"):
        parse_min_confidence([0.5])
    with pytest.raises(ValueError, match=r"^must be a number from 0 to 1, got true$"):
        parse_min_confidence(True)


@pytest.fixture(scope="module")
def request_bodies():
    from service import request_bodies

    return request_bodies


def _item() -> dict:
    return {"model": "tiny", "pixels": base64.b64encode(bytes(32 * 32 * 3)).decode()}


def test_infer_refuses_a_field_beside_items_instead_of_ignoring_it(request_bodies):
    """A "fit" or "k" next to the items was dropped without a word: the pixels were answered as if unasked."""
    refused = request_bodies.InferInput.parse(json.dumps({"items": [_item()], "fit": "pad"}).encode())
    assert isinstance(refused, Rejection)
    assert (refused.reason, refused.message) == ("malformed_request", "unknown field fit: this route does not read it")


def test_infer_reads_json_after_a_utf8_byte_order_mark_as_classify_and_v2_do(request_bodies):
    body = json.dumps({"items": [_item()]}).encode()
    read = request_bodies.InferInput.parse(codecs.BOM_UTF8 + body)
    assert not isinstance(read, Rejection), read
    assert [item.model for item in read.items] == ["tiny"]


def test_post_models_reads_an_empty_json_object_after_a_byte_order_mark(request_bodies):
    from starlette.requests import Request

    body = codecs.BOM_UTF8 + b"{}"

    async def receive():
        return {"type": "http.request", "body": body, "more_body": False}

    scope = {
        "type": "http",
        "method": "POST",
        "path": "/models",
        "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        "query_string": b"",
    }
    read = asyncio.run(request_bodies.NoInput.read(Request(scope, receive)))
    assert isinstance(read, request_bodies.NoInput), read


def test_the_request_bodies_are_described_for_clients_not_for_maintainers(request_bodies):
    """The OpenAPI document (/docs.json, /docs) shows these descriptions to clients: they named BodyGate and
    BentoML's parsing instead of what to send."""
    for body in (request_bodies.InferInput, request_bodies.ClassifyInput):
        described = body.model_json_schema()["description"]
        assert "application/json" in described
        assert not any(word in described for word in ("``", "BodyGate", "BentoML")), described


def test_a_form_posted_to_a_v2_model_is_pointed_to_the_json_it_takes_or_to_classify():
    """`curl -F images=@cat.jpg .../v2/models/NAME/infer` was told "Invalid JSON: invalid number at line 1 column 2"."""
    import httpx
    from starlette.applications import Starlette

    from service.oip_http import oip_routes

    running = SimpleNamespace(loaded={"tiny": MODEL}, ready=True)
    app = Starlette(routes=oip_routes(lambda: running, "cifar_classifier", 4, 1_000_000))

    async def send() -> httpx.Response:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://oip.test") as client:
            return await client.post("/v2/models/tiny/infer", files={"images": ("cat.png", b"\x89PNG")})

    response = asyncio.run(send())
    assert response.status_code == 400
    said = response.json()["error"]
    assert said.startswith("a multipart form is not an inference request") and "/classify" in said, said

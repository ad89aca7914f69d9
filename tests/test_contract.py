"""The HTTP contract's types and its one table of refusals (service/contract.py), without a server."""

from __future__ import annotations

import json
import re
from typing import get_args

import pytest
from pydantic import ValidationError

from conftest import ROOT
from service.contract import REASONS, REJECTION_REASONS, ClassifyResponse, ReasonName, Rejection
from service.request_fields import rejection_from
from service.uploads import Upload


def test_every_reason_has_a_refusal_status_and_only_caller_mistakes_are_counted():
    assert all(400 <= reason.status < 600 for reason in REASONS.values())
    # counted: a client's mistake in what it sent; a connection that stalled (408) or hung up (499) sent nothing
    # to judge, a wrong method (405), path (404) or CORS preflight (400) sent no input, and an overloaded server
    # (503) is ours
    assert REJECTION_REASONS == tuple(
        name
        for name, reason in REASONS.items()
        if reason.status < 500
        and name not in ("body_stalled", "client_closed", "method_not_allowed", "no_such_path", "cors_refused")
    )
    assert Rejection("image_too_large", "x").status == 413 and Rejection("overloaded", "x").status == 503
    with pytest.raises(ValueError, match="unknown rejection reason 'too_large'"):
        Rejection("too_large", "a status is never chosen by words")


def test_reason_name_is_the_tables_names_in_order():
    """Spelt out for the type checker; ClassifyError's schema (the OpenAPI document) lists them in this order."""
    assert get_args(ReasonName) == tuple(REASONS)


def test_the_deploy_guide_lists_the_table():
    """docs/deploy.md's table of refusals says what REASONS says, status for status."""
    text = (ROOT / "docs" / "deploy.md").read_text()
    documented, uncounted = {}, set()
    for status, names, when in re.findall(r"^\| (\d{3}) \| (`[a-z_]+`(?: / `[a-z_]+`)*) \|(.*)$", text, re.M):
        for name in re.findall(r"`([a-z_]+)`", names):
            documented[name] = int(status)
            if "not counted" in when.lower():
                uncounted.add(name)
    assert documented == {name: reason.status for name, reason in REASONS.items()}
    # the table's heading says every row is counted in cifar_rejected_inputs_total but those that say not
    assert uncounted == {name for name, reason in REASONS.items() if not reason.counted}


@pytest.fixture(scope="module")
def classify_input():
    from service.request_bodies import ClassifyInput

    return ClassifyInput


IMAGE = [Upload("a.jpg", b"\xff\xd8\xff")]
REFUSED = {
    # fields sent (already decoded from JSON or left as text) -> (reason, message)
    "k five": ({"k": "five"}, "bad_k", "k must be an integer, got 'five'"),
    "k zero": ({"k": 0}, "bad_k", "k must be at least 1, got 0"),
    "k true": ({"k": True}, "bad_k", "k must be an integer, got true"),
    "k float": ({"k": 3.0}, "bad_k", "k must be an integer, got 3.0"),
    "model number": ({"model": 5}, "malformed_request", "'model' must be a model name, got 5"),
    "threshold words": (
        {"min_confidence": "high"},
        "bad_min_confidence",
        "min_confidence must be a number from 0 to 1, got 'high'",
    ),
    "threshold above 1": (
        {"min_confidence": 1.5},
        "bad_min_confidence",
        "min_confidence must be between 0 and 1, got 1.5",
    ),
    "threshold past float": (
        {"min_confidence": 10**400},
        "bad_min_confidence",
        "min_confidence must be between 0 and 1, got a number of 401 digits",
    ),
    "threshold negative past float": (
        {"min_confidence": -(10**400)},
        "bad_min_confidence",
        "min_confidence must be between 0 and 1, got a negative number of 401 digits",
    ),
    "no images": ({"images": []}, "no_images", "no images: send one or more files in the 'images' field"),
    "fit unknown": ({"fit": "stretch"}, "bad_fit", "fit must be one of center_crop, squash, pad, got 'stretch'"),
    "fit number": ({"fit": 3}, "bad_fit", "fit must be one of center_crop, squash, pad, got 3"),
}


@pytest.mark.parametrize("case", list(REFUSED))
def test_bad_fields_are_refused_with_their_reason(classify_input, case):
    fields, reason, message = REFUSED[case]
    with pytest.raises(ValidationError) as error:
        classify_input.model_validate({"images": IMAGE, **fields})
    rejection = rejection_from(error.value)
    assert (rejection.reason, rejection.message) == (reason, message)
    assert rejection.status == REASONS[reason].status


def test_good_fields_are_typed_and_absent_ones_are_none(classify_input):
    given = classify_input.model_validate(
        {"images": IMAGE, "k": "3", "model": "tiny", "min_confidence": "0.5", "fit": "pad"}
    )
    assert (given.images, given.k, given.model, given.min_confidence, given.fit, given.rejection) == (
        IMAGE,
        3,
        "tiny",
        0.5,
        "pad",
        None,
    )
    absent = classify_input.model_validate({"images": IMAGE, "k": None, "model": "", "min_confidence": None, "fit": ""})
    assert (absent.k, absent.model, absent.min_confidence, absent.fit) == (None, None, None, None)


def test_the_fit_is_the_requests_or_else_the_models():
    """``resolve_fit``: what every route (a form field, a JSON field, a protocol parameter) decodes with."""
    from service.uploads import resolve_fit

    assert resolve_fit(None, "squash") == "squash"
    assert resolve_fit("pad", "squash") == "pad"
    refused = resolve_fit("letterbox", "squash")
    assert isinstance(refused, Rejection) and (refused.reason, refused.status) == ("bad_fit", 400)
    assert "center_crop, squash, pad" in refused.message


def test_the_answer_leaves_confident_out_without_a_threshold():
    top = [{"label": "cat", "index": 3, "confidence": 0.9}]
    plain = ClassifyResponse.model_validate({"model": "m", "predictions": [{"filename": "a", "top_k": top}]})
    assert plain.to_json() == {"model": "m", "predictions": [{"filename": "a", "top_k": top}]}
    marked = ClassifyResponse.model_validate(
        {"model": "m", "predictions": [{"filename": "a", "top_k": top, "confident": False}]}
    )
    assert marked.to_json()["predictions"][0]["confident"] is False


def test_decoding_stops_between_images_once_the_request_is_cancelled(monkeypatch):
    """One worker-thread call per image: a request's timeout (a cancelled scope) ends its decoding after the
    image in hand, where one call for all of them would decode every image first."""
    import anyio
    import anyio.from_thread

    from service import uploads

    decoded, scopes = [], []

    def decode(data, size, max_pixels, fit):
        decoded.append(data)
        anyio.from_thread.run_sync(scopes[0].cancel)
        return bytes(size[0] * size[1] * 3)

    monkeypatch.setattr(uploads, "decode_pixels", decode)

    async def request():
        with anyio.CancelScope() as scope:
            scopes.append(scope)
            await uploads.decode_uploads([Upload(f"{i}.png", bytes([i])) for i in range(4)], (32, 32), 10**6, "squash")

    anyio.run(request)
    assert decoded == [bytes([0])]


def test_infer_items_are_refused_with_the_contracts_reasons():
    from service.request_bodies import InferInput
    from service.startup import SETTINGS

    item = {"model": "tiny", "pixels": "AAAAAA==", "dtype": "float32"}  # one float, 0.0
    with pytest.raises(ValidationError) as error:
        InferInput.model_validate({"items": [item] * (SETTINGS.max_batch_size + 1)})
    refused = rejection_from(error.value)
    assert refused.reason == "too_many_images" and f"got {SETTINGS.max_batch_size + 1}" in refused.message
    with pytest.raises(ValidationError) as error:
        InferInput.model_validate({"items": [{**item, "pixels": "AADAfw=="}]})  # NaN
    refused = rejection_from(error.value)
    assert (refused.reason, refused.status) == ("bad_tensor", 400) and "[0, 1]" in refused.message
    # the field is named where it is, not as the list that holds it
    with pytest.raises(ValidationError) as error:
        InferInput.model_validate_json('{"items": [{"model": "tiny"}]}')
    assert rejection_from(error.value).message == "items[0].pixels: Field required"
    # base64 that is not: the reason /classify and /v2 give, and how to mend a browser's data URL
    data_url = {"items": [{**item, "pixels": "data:application/octet-stream;base64,AAAAAA=="}]}
    with pytest.raises(ValidationError) as error:
        InferInput.model_validate_json(json.dumps(data_url))
    refused = rejection_from(error.value)
    assert refused.reason == "bad_encoding" and refused.message.startswith("items[0].pixels is not valid base64")
    assert "send only the base64 after 'base64,'" in refused.message


def test_the_json_body_schema_takes_every_field_the_form_does(classify_input):
    """The JSON body is refused for any field its schema does not list (additionalProperties false), so the
    schema must list every field the service reads."""
    from service.openapi import _classify_json
    from service.request_fields import FIELDS

    form = classify_input.model_json_schema()["properties"]
    form["images"]["maxItems"] = 8
    schema = _classify_json(form)
    assert schema["additionalProperties"] is False
    assert set(schema["properties"]) == set(FIELDS)
    assert schema["properties"]["fit"] == form["fit"]


@pytest.mark.parametrize(
    "given, read",
    [
        ({"model": "1e5", "fit": "pad"}, {"model": "1e5", "fit": "pad"}),  # names are text, even number-like
        ({"model": "null"}, {"model": "null"}),  # a model may be named null: omit the field for the default
        ({"model": '"tiny"', "fit": '"squash"'}, {"model": "tiny", "fit": "squash"}),  # BentoML's client quotes
        ({"k": "3", "min_confidence": "0.5"}, {"k": 3, "min_confidence": 0.5}),
        ({"k": "five", "min_confidence": "null"}, {"k": "five", "min_confidence": None}),
    ],
)
def test_form_fields_read_numbers_as_json_and_names_as_text(given, read):
    import anyio
    from starlette.datastructures import FormData

    from service.classify_body import _check_form

    fields = anyio.run(_check_form, FormData(list(given.items())))
    assert fields == {**read, "images": []}


@pytest.mark.parametrize("content_type", ["application/json", "multipart/form-data; boundary=x"])
def test_a_body_that_stops_arriving_is_refused_as_stalled_long_before_the_timeout(monkeypatch, content_type):
    """A client that sends part of its body and then nothing: 408 once no byte came for BODY_IDLE_S (made short
    here), not a request slot held until --timeout answers the server's 504."""
    import anyio
    from starlette.requests import Request

    import service.body_limits as body_limits
    from service.classify_body import read_classify_fields

    monkeypatch.setattr(body_limits, "BODY_IDLE_S", 0.2)
    sent = iter([{"type": "http.request", "body": b"--x\r\nContent-Disposition: form-data; na", "more_body": True}])

    async def receive():
        message = next(sent, None)
        if message is None:
            await anyio.sleep(3600)  # the client says nothing more
        return message

    scope = {"type": "http", "method": "POST", "path": "/classify", "query_string": b""}
    scope["headers"] = [(b"content-type", content_type.encode())]
    request = Request(scope, receive)

    async def read():
        with anyio.fail_after(10):
            return await read_classify_fields(request, max_images=4, max_body_bytes=10_000)

    refused = anyio.run(read)
    assert isinstance(refused, Rejection) and refused.reason == "body_stalled" and refused.status == 408
    assert "no byte of the request body arrived for 0.2 seconds" in refused.message


def _read_classify(body: bytes, content_type: bytes, query: bytes = b""):
    """``read_classify_fields`` of one POST /classify whose whole body arrives at once."""
    import anyio
    from starlette.requests import Request

    from service.classify_body import read_classify_fields

    async def receive():
        return {"type": "http.request", "body": body, "more_body": False}

    scope = {"type": "http", "method": "POST", "path": "/classify", "query_string": query}
    scope["headers"] = [(b"content-type", content_type)]
    return anyio.run(read_classify_fields, Request(scope, receive), 4, 100_000)


def test_a_classify_field_in_the_url_is_refused_not_ignored():
    """`/classify?k=1&model=x` was answered with the default model and k; a parameter that is no field (a
    cache-buster) still asks nothing."""
    refused = _read_classify(b'{"images": []}', b"application/json", b"model=nope&k=1&v=3")
    assert isinstance(refused, Rejection) and refused.reason == "malformed_request" and refused.status == 400
    assert refused.message.startswith("'k', 'model' in the URL's query string: /classify reads its fields")
    assert _read_classify(b'{"images": []}', b"application/json", b"v=3") == {"images": []}


def test_a_multipart_file_name_over_the_header_limit_is_named_as_such():
    """python-multipart refuses a part header line over about 4 KB; starlette called it "Invalid multipart data."
    as any other error."""

    def read(name: bytes):
        body = b'--x\r\nContent-Disposition: form-data; name="images"; filename="' + name + b'"\r\n\r\nabc\r\n--x--\r\n'
        return _read_classify(body, b"multipart/form-data; boundary=x")

    refused = read("猫".encode() * 2000)
    assert isinstance(refused, Rejection) and refused.reason == "malformed_request"
    assert "Maximum header size exceeded (a part's header line, its file name included, is limited to 4 KB)" in (
        refused.message
    )
    assert read(b"cat.png")["images"][0].filename == "cat.png"


def test_a_json_body_of_many_objects_is_refused_without_a_python_call_for_each(monkeypatch):
    """A /classify body holds at most one object per image and itself. Each object was read through a Python
    hook (noting repeated keys): a 32 MB body of millions of {} held the worker's event loop, health checks
    included, for 10 s. A body holding more JSON values than the largest request is refused before it is parsed,
    whatever it holds."""
    import service.classify_json as classify_json

    calls = []
    noting = classify_json._noting_repeats
    monkeypatch.setattr(classify_json, "_noting_repeats", lambda pairs: calls.append(1) or noting(pairs))
    many = 7_000  # within _read_classify's body limit
    for body in (
        b"[" + b"{}," * many + b"{}]",
        b'{"images": [' + b'{"data": ""},' * many + b'{"data": ""}]}',
        b'{"images": [{"data": "AA=="}], "fit": [' + b"{}," * many + b"{}]}",
    ):
        refused = _read_classify(body, b"application/json")
        assert isinstance(refused, Rejection) and refused.reason == "too_many_images", refused
        assert "at most 4 per request" in refused.message, refused  # _read_classify's max_images: 4
    assert not calls, len(calls)
    # a body within the bound still has its repeated keys noted
    refused = _read_classify(b'{"images": [{"data": "AA=="}], "k": 1, "k": 2}', b"application/json")
    assert isinstance(refused, Rejection) and (refused.reason, refused.message) == (
        "bad_k",
        "'k' given 2 times: send it once",
    )

"""A binary-extension inference request whose Inference-Header-Content-Length header is missing (a proxy that drops
headers it does not know, or a client built by hand) is refused as binary, as docs/deploy.md promises, not as
"Invalid JSON: trailing characters" or "data: Field required"."""

from __future__ import annotations

import asyncio
import json
from types import SimpleNamespace
from typing import Any

import httpx
import numpy as np
import pytest
from starlette.applications import Starlette

from service.oip_http import oip_routes


class _Running:
    """One model, "tiny", that no request here may reach."""

    ready = True

    def __init__(self) -> None:
        entry = SimpleNamespace(name="tiny", input=SimpleNamespace(name="input", fit="squash"))
        self.loaded = {"tiny": SimpleNamespace(classes=["a", "b", "c"], size=(32, 32), entry=entry)}

    async def predict_uploads(self, model: Any, uploads: list, fit: str) -> np.ndarray:
        raise AssertionError("a binary request must be refused before any image is read")

    async def predict_tensor(self, model: Any, tensor: np.ndarray) -> np.ndarray:
        raise AssertionError("a binary request must be refused before the model runs")


def _post(content: bytes, max_body_bytes: int = 1_000_000) -> httpx.Response:
    app = Starlette(routes=oip_routes(lambda: _Running(), "cifar_classifier", 4, max_body_bytes))

    async def send() -> httpx.Response:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://oip.test") as client:
            return await client.post("/v2/models/tiny/infer", content=content)

    return asyncio.run(send())


def _header(name: str, shape: list[int], datatype: str, size: int) -> bytes:
    tensor = {"name": name, "shape": shape, "datatype": datatype, "parameters": {"binary_data_size": size}}
    return json.dumps({"inputs": [tensor]}).encode()


PIXELS = np.random.default_rng(0).random((1, 3, 32, 32)).astype(np.float32).tobytes()
CASES = {
    # tritonclient's body (binary_data=True, its default) with the header that says where the JSON ends gone
    "FP32 tensor after the JSON": _header("input", [1, 3, 32, 32], "FP32", len(PIXELS)) + PIXELS,
    "image bytes after the JSON": _header("images", [1], "BYTES", 8) + b"\x04\x00\x00\x00\xff\xd8\xff\xe0",
    "the JSON alone, no data": _header("images", [1], "BYTES", 8),
}


@pytest.mark.parametrize("case", list(CASES))
def test_a_binary_request_without_its_header_is_refused_as_binary(case):
    response = _post(CASES[case])
    assert response.status_code == 400, response.text
    assert response.json() == {
        "error": "the binary tensor data extension is not supported: send the data as JSON "
        "(tritonclient: set_data_from_numpy(..., binary_data=False))"
    }


def test_a_json_body_that_is_simply_broken_is_still_said_to_be_so():
    for content, words in ((b'{"inputs": [', "Invalid JSON"), (b'{"inputs": []} trailing', "trailing characters")):
        response = _post(content)
        assert response.status_code == 400 and words in response.json()["error"], response.text


def test_a_binary_request_of_large_files_is_refused_as_binary_not_as_too_many_images():
    """Four image files of 1 MiB (the model takes 4 a request): their raw bytes hold ',' '[' and '{' as JSON's
    values would, more than four images' worth, but the request is refused for being binary."""
    rng = np.random.default_rng(0)
    files = [rng.bytes(1 << 20) for _ in range(4)]
    tail = b"".join(len(file).to_bytes(4, "little") + file for file in files)
    response = _post(_header("images", [4], "BYTES", len(tail)) + tail, max_body_bytes=8 << 20)
    assert response.status_code == 400, response.text
    assert response.json()["error"].startswith("the binary tensor data extension is not supported"), response.text


def test_a_json_body_over_the_bound_on_its_values_is_still_refused_unparsed():
    """Its binary_data_size far into the body: only the body's beginning is read for it."""
    crowded = (
        b'{"inputs": [{"name": "input", "data": [' + b"[]," * 30_000 + b'[]], "parameters": {"binary_data_size": 4}}]}'
    )
    response = _post(crowded)
    assert response.status_code == 400, response.text
    assert response.json()["error"].startswith("too many images: at most 4 per request"), response.text

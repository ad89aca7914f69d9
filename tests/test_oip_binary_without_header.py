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


def _post(content: bytes) -> httpx.Response:
    app = Starlette(routes=oip_routes(lambda: _Running(), "cifar_classifier", 4, 1_000_000))

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

"""The Open Inference Protocol's routes (service/oip_http.py) as the protocol's clients other than tritonclient
use them, served in-process by starlette with a stand-in for the running service: the bodies here are those the
kserve SDK (kserve.InferenceRESTClient, kserve.InferRequest.to_rest) sends and reads."""

from __future__ import annotations

import asyncio
import uuid
from types import SimpleNamespace
from typing import Any, Optional

import httpx
import numpy as np
import pytest
from starlette.applications import Starlette

from service.contract import Rejection, not_loaded
from service.oip_http import oip_routes
from service.uploads import Upload

CLASSES = ["alpha", "beta", "gamma"]
MAX_IMAGES = 4


class _Running:
    """What the routes need of the service: one model, "tiny", whose probabilities are a function of its input,
    so that an answer shows which pixels reached it."""

    ready = True

    def __init__(self) -> None:
        self.loaded = {
            "tiny": SimpleNamespace(
                classes=CLASSES,
                size=(32, 32),
                entry=SimpleNamespace(name="tiny", input=SimpleNamespace(name="input", fit="squash")),
            )
        }
        self.tensors: list[np.ndarray] = []

    async def predict_uploads(self, model: Any, uploads: list[Upload], fit: str) -> np.ndarray | Rejection:
        raise AssertionError("these tests send FP32 tensors")

    async def predict_tensor(self, model: Any, tensor: np.ndarray) -> np.ndarray | Rejection:
        self.tensors.append(tensor)
        return _probabilities(tensor)


def _probabilities(tensor: np.ndarray) -> np.ndarray:
    means = tensor.reshape(len(tensor), len(CLASSES), -1).mean(axis=2) + 1e-3
    return means / means.sum(axis=1, keepdims=True)


def _exchange(running: Optional[_Running], *requests: tuple[str, str, Optional[dict]]) -> list[httpx.Response]:
    """The answers to ``requests`` (method, path, JSON body or None), in order."""
    app = Starlette(routes=oip_routes(lambda: running, "cifar_classifier", MAX_IMAGES, 1_000_000))

    async def send() -> list[httpx.Response]:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://oip.test") as client:
            return [await client.request(method, path, json=body) for method, path, body in requests]

    return asyncio.run(send())


def _pixels(count: int) -> np.ndarray:
    return np.random.default_rng(count).random((count, 3, 32, 32)).astype(np.float32)


def _kserve_body(model_name: str, pixels: np.ndarray, outputs: Optional[list[dict]] = None) -> dict:
    """InferRequest.to_rest() of kserve 0.21 for an FP32 input set with set_data_from_numpy(binary_data=False): it
    names the model in the body and always sends an id, a UUID when the caller gave none."""
    body: dict[str, Any] = {
        "id": str(uuid.uuid4()),
        "model_name": model_name,
        "inputs": [{"name": "input", "shape": list(pixels.shape), "datatype": "FP32", "data": pixels.ravel().tolist()}],
    }
    if outputs:
        body["outputs"] = outputs
    return body


def test_the_kserve_sdks_inference_request_is_answered():
    """The kserve SDK puts ``model_name`` in every request body, which the strict request type refused as an
    unknown field: the SDK could not infer at all."""
    running = _Running()
    pixels = _pixels(2)
    top2 = [{"name": "probabilities", "parameters": {"classification": 2}}]
    plain, ranked = _exchange(
        running,
        ("POST", "/v2/models/tiny/infer", _kserve_body("tiny", pixels)),
        ("POST", "/v2/models/tiny/versions/1/infer", _kserve_body("tiny", pixels, top2)),
    )
    assert plain.status_code == 200, plain.text
    assert ranked.status_code == 200, ranked.text
    assert np.array_equal(running.tensors[0], pixels)
    answer = plain.json()
    assert answer["model_name"] == "tiny" and uuid.UUID(answer["id"])
    (output,) = answer["outputs"]
    expected = _probabilities(pixels)
    assert output["shape"] == [2, len(CLASSES)]
    assert output["data"] == pytest.approx(expected.ravel().tolist(), abs=1e-6)
    (classes,) = ranked.json()["outputs"]
    best = [int(entry.split(":")[1]) for entry in classes["data"]]
    assert best == np.argsort(-expected, axis=1)[:, :2].ravel().tolist()


def test_a_body_naming_another_model_than_the_path_is_refused():
    running = _Running()
    (response,) = _exchange(running, ("POST", "/v2/models/tiny/infer", _kserve_body("resnet", _pixels(1))))
    assert response.status_code == 400, response.text
    assert list(response.json()) == ["error"]
    assert "'resnet'" in response.json()["error"] and "'tiny'" in response.json()["error"]
    assert running.tensors == []


@pytest.mark.parametrize("loaded", [True, False])
def test_server_health_answers_in_the_body_the_kserve_sdk_reads(loaded):
    """kserve.InferenceRESTClient.is_server_live and is_server_ready read ``{"live": bool}`` and ``{"ready": bool}``
    from a 200 (KServe's own server sends them): an empty body failed them with a JSON decoding error. The status
    stays what the protocol and tritonclient read: 200, or 400 while the models load."""
    live, ready = _exchange(
        _Running() if loaded else None, ("GET", "/v2/health/live", None), ("GET", "/v2/health/ready", None)
    )
    assert live.status_code == 200 and live.json() == {"live": True}
    assert ready.status_code == (200 if loaded else 400)
    assert ready.json() == {"ready": loaded}


@pytest.mark.parametrize(
    "name, datatype, shape",
    [
        ("input", "FP32", [3 * 32 * 32]),  # one image, flat
        ("input", "FP32", [32, 32, 3]),  # one image as PIL or OpenCV hold it, no batch axis
        ("input", "FP32", [MAX_IMAGES + 1, 3]),
        ("images", "BYTES", [MAX_IMAGES + 1, 1]),
    ],
)
def test_a_shape_that_is_not_the_inputs_is_refused_as_such_not_as_too_many_images(name, datatype, shape):
    """The first axis of any shape was read as the number of images before the rest of the shape was checked: one
    image sent without its batch axis was refused as "too many images" (whose remedy for a client is to send
    fewer), not as the wrong shape."""
    count = int(np.prod(shape))
    data = ["AA=="] * count if datatype == "BYTES" else [0.5] * count
    body = {"inputs": [{"name": name, "shape": shape, "datatype": datatype, "data": data}]}
    (response,) = _exchange(_Running(), ("POST", "/v2/models/tiny/infer", body))
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert "must have shape" in error and str(shape) in error, error


def test_a_model_route_while_the_models_load_says_when_to_ask_again():
    """A 503 without Retry-After leaves a client to guess; /classify waits for the models instead."""
    body = {"inputs": [{"name": "input", "shape": [1, 3, 32, 32], "datatype": "FP32", "data": [0.5] * 3072}]}
    infer, metadata = _exchange(None, ("POST", "/v2/models/tiny/infer", body), ("GET", "/v2/models/tiny", None))
    for answer in (infer, metadata):
        assert answer.status_code == 503 and answer.headers["retry-after"] == "1"
        assert answer.json() == {"error": not_loaded().message}

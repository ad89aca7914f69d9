"""What a refusal says back of a request: a client's file name is shortened as every other value sent is, and a
/v2 'fit' parameter that cannot apply is refused rather than answered without it."""

from __future__ import annotations

import json

import numpy as np

from service.contract import Rejection
from service.oip import read_infer_request
from service.uploads import Upload, decode_upload
from test_service_user_edges import MODEL


def test_a_long_file_name_is_not_echoed_whole_in_a_refusal():
    name = "x" * 100_000 + ".jpg"
    refused = decode_upload(0, Upload(name, b""), (32, 32), 10**6, "squash")
    assert isinstance(refused, Rejection) and refused.reason == "empty_file"
    assert len(refused.message) < 300, len(refused.message)
    assert refused.message.startswith("images[0] ('xxxx") and refused.message.endswith("is an empty file (0 bytes)")


def test_a_short_file_name_is_still_named_as_it_was():
    refused = decode_upload(3, Upload("cat.jpg", b""), (32, 32), 10**6, "squash")
    assert isinstance(refused, Rejection) and refused.message == "images[3] ('cat.jpg') is an empty file (0 bytes)"


def _tensor_request(parameters: dict | None) -> bytes:
    pixels = np.zeros((1, 3, 32, 32), np.float32).ravel().tolist()
    body: dict = {"inputs": [{"name": "input", "shape": [1, 3, 32, 32], "datatype": "FP32", "data": pixels}]}
    if parameters is not None:
        body["parameters"] = parameters
    return json.dumps(body).encode()


def test_a_v2_fit_beside_the_fp32_input_is_refused_not_ignored():
    refused = read_infer_request(_tensor_request({"fit": "pad"}), MODEL, 4)
    assert isinstance(refused, Rejection) and refused.reason == "bad_fit", refused
    assert "'fit'" in refused.message and "fitted already" in refused.message


def test_a_v2_fp32_request_without_fit_is_still_read():
    plan = read_infer_request(_tensor_request({"note": "x"}), MODEL, 4)
    assert not isinstance(plan, Rejection), plan
    assert plan.inputs.shape == (1, 3, 32, 32)

"""Edges of what users give: paths whose names are not UTF-8 text, and refusals that say what to send instead."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import anyio
import pytest
from starlette.datastructures import FormData
from starlette.requests import Request

from export.pipeline import export_checkpoint
from inference.manifest import load_manifest
from inference.runtime import ModelFileError, OnnxClassifier, read_card
from service.__main__ import main as service_main
from service.classify_body import _check_form, read_classify_fields
from service.contract import Rejection

# A byte no UTF-8 text holds: Python names it by a surrogate escape, as it names such a file it lists
NOT_UTF8 = b"\xff".decode("utf-8", "surrogateescape")


@pytest.fixture
def odd_models_dir(tiny_models_dir: Path, tmp_path: Path) -> Path:
    folder = tmp_path / f"models{NOT_UTF8}"
    shutil.copytree(tiny_models_dir, folder)
    return folder


def test_a_models_folder_whose_name_is_not_utf8_loads(odd_models_dir, tiny_models_dir):
    """ONNX Runtime's binding takes a model's name as UTF-8 only: such a folder ended in a TypeError traceback."""
    entry = load_manifest(odd_models_dir).models[0]
    clf = OnnxClassifier(odd_models_dir / entry.file, device="cpu")
    assert clf.card == read_card(odd_models_dir / entry.file) == read_card(tiny_models_dir / entry.file)


def test_score_reads_a_models_folder_whose_name_is_not_utf8(odd_models_dir, image_folder, tmp_path):
    out = tmp_path / "scores.jsonl"
    args = ["score", str(image_folder), "--models-dir", str(odd_models_dir), "--out", str(out), "--no-progress"]
    assert service_main(args) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert rows and all(row["error"] in (None, "") and row["top_k"] for row in rows), rows[:2]


def test_a_checkpoint_whose_path_is_not_utf8_exports_with_u_fffd(tiny_run, tmp_path, caplog):
    """A card is JSON, which holds UTF-8 text only: the export ended in a PydanticSerializationError after its
    validation pass, with nothing written."""
    folder = tmp_path / f"run{NOT_UTF8}"
    folder.mkdir()
    shutil.copy(tiny_run / "best.pt", folder / "best.pt")
    models = tmp_path / "models"
    with caplog.at_level(logging.WARNING, logger="export"):
        entry, _ = export_checkpoint(folder / "best.pt", "odd", "fp32", models, cache_dir=None)
    recorded = str(tmp_path / "run\ufffd" / "best.pt")
    assert entry.source["checkpoint"] == recorded
    assert load_manifest(models).models[0].source["checkpoint"] == recorded
    assert read_card(models / entry.file).source["checkpoint"] == recorded
    assert any("U+FFFD" in r.getMessage() and recorded in r.getMessage() for r in caplog.records), caplog.text


def _classify(body: bytes, headers: list[tuple[bytes, bytes]]) -> dict | Rejection:
    async def receive() -> dict:
        return {"type": "http.request", "body": body, "more_body": False}

    scope = {"type": "http", "method": "POST", "path": "/classify", "query_string": b"", "headers": headers}
    return anyio.run(read_classify_fields, Request(scope, receive), 4, 100_000)


def test_a_repeated_field_is_refused_saying_to_send_it_once():
    refused = _classify(b'{"images": [{"data": "AA=="}], "k": 1, "k": 2}', [(b"content-type", b"application/json")])
    assert isinstance(refused, Rejection) and refused.reason == "bad_k"
    assert refused.message == "'k' given 2 times: send it once"
    refused = _classify(b'{"images": [{"data": "AA==", "data": "AA=="}]}', [(b"content-type", b"application/json")])
    assert isinstance(refused, Rejection) and refused.message == "images[0]: 'data' given 2 times: send it once"
    refused = anyio.run(_check_form, FormData([("k", "1"), ("k", "2")]))
    assert isinstance(refused, Rejection) and refused.reason == "bad_k"
    assert refused.message == "'k' given 2 times: send it once"


def test_an_invalid_content_length_is_refused_saying_what_to_send():
    headers = [(b"content-type", b"multipart/form-data; boundary=x"), (b"content-length", b"ten")]
    refused = _classify(b"", headers)
    assert isinstance(refused, Rejection) and (refused.reason, refused.status) == ("malformed_request", 400)
    assert refused.message.startswith("invalid Content-Length 'ten': send the body's size in bytes")


@pytest.mark.parametrize("declared", [b"ten", b"-5", b"+10", b"1e3"])
def test_an_invalid_content_length_is_refused_on_the_json_route_too(declared):
    # the JSON body's reader took only a run of digits for a size and read on past anything else
    headers = [(b"content-type", b"application/json"), (b"content-length", declared)]
    refused = _classify(b'{"images": [{"data": "AA=="}]}', headers)
    assert isinstance(refused, Rejection) and (refused.reason, refused.status) == ("malformed_request", 400)
    assert refused.message.startswith(f"invalid Content-Length {declared.decode()!r}: send the body's size")


def test_a_file_that_is_not_onnx_is_refused_in_one_line_by_read_card(tmp_path):
    path = tmp_path / "junk.onnx"
    path.write_bytes(b"junk")
    with pytest.raises(ModelFileError, match="junk.onnx is not an ONNX model ONNX Runtime can load") as info:
        read_card(path)
    assert "\n" not in str(info.value)

"""The torch-free inference layer as an ML engineer calls it from Python: ``OnnxClassifier``, ``top_k`` and the
file names the scorer and training's folder reader take for images."""

from __future__ import annotations

import codecs
import json

import numpy as np
import pytest
from PIL import Image

from conftest import ROOT
from inference.errors import UsageError
from inference.image_formats import DECODABLE_FORMATS, is_image_name
from inference.manifest import METADATA_KEY, load_manifest
from inference.preprocess import to_model_input
from inference.runtime import OnnxClassifier, read_card, top_k, wants_cuda

MODEL = ROOT / "models" / "resnet9-half-cifar10-int8.onnx"


@pytest.fixture(scope="module")
def classifier() -> OnnxClassifier:
    return OnnxClassifier(MODEL, device="cpu")


@pytest.mark.parametrize("device", ["gpu", "cuda:0", "CPU"])
def test_a_device_name_that_is_not_one_is_refused_not_run_on_the_cpu(device):
    with pytest.raises(UsageError, match=r"unknown device .*valid: auto, cpu, cuda"):
        wants_cuda(device)
    with pytest.raises(UsageError, match="unknown device"):
        OnnxClassifier(MODEL, device=device)


def test_uint8_pixels_are_refused_where_they_would_be_read_as_0_to_255(classifier):
    pixels = np.full((2, 3, 32, 32), 200, dtype=np.uint8)
    with pytest.raises(UsageError, match=r"float32 \[N, 3, 32, 32\] in \[0, 1\], got uint8.*to_model_input"):
        classifier.logits(pixels)
    with pytest.raises(UsageError, match="got uint8"):
        classifier.probabilities(pixels)


@pytest.mark.parametrize("shape", [(2, 32, 32, 3), (3, 32, 32), (2, 3, 64, 64)])
def test_a_batch_of_another_layout_or_size_is_refused_naming_the_one_the_model_takes(classifier, shape):
    with pytest.raises(UsageError, match=rf"float32 \[N, 3, 32, 32\] in \[0, 1\], got float32 \[{shape[0]}, "):
        classifier.logits(np.zeros(shape, dtype=np.float32))


def test_float_batches_of_any_precision_still_run(classifier):
    x = np.random.default_rng(0).random((3, 3, 32, 32))
    assert np.allclose(classifier.logits(x), classifier.logits(x.astype(np.float32)), atol=1e-5)
    assert classifier.logits(np.zeros((0, 3, 32, 32), dtype=np.float32)).shape == (0, 10)


def test_top_k_past_the_classes_answers_them_all_and_below_one_is_refused():
    probs = np.array([[0.1, 0.6, 0.3], [0.5, 0.2, 0.3]])
    index, score = top_k(probs, 10)
    assert index.tolist() == [[1, 2, 0], [0, 2, 1]] and np.allclose(score, np.sort(probs)[:, ::-1])
    for k in (0, -1):
        with pytest.raises(UsageError, match=f"k must be at least 1, got {k}"):
            top_k(probs, k)


def test_every_file_name_pillow_reads_a_decodable_format_under_is_an_image():
    """A JPEG a browser saved as photo.jfif, or a .pnm, is read, not skipped as "not an image"."""
    Image.init()
    names = {ext for ext, fmt in Image.registered_extensions().items() if fmt in DECODABLE_FORMATS}
    assert {".jfif", ".jpe", ".pnm", ".pbm"} <= names
    assert sorted(ext for ext in names if not is_image_name(f"photo{ext}")) == []
    assert is_image_name("PHOTO.JFIF") and not is_image_name("._photo.jfif")


def test_a_manifest_saved_with_a_byte_order_mark_is_read(tmp_path):
    manifest = (ROOT / "models" / "manifest.json").read_bytes()
    (tmp_path / "manifest.json").write_bytes(codecs.BOM_UTF8 + manifest)
    assert load_manifest(tmp_path, verify=False) == load_manifest(ROOT / "models", verify=False)


def test_a_missing_relative_models_folder_is_said_with_where_it_was_looked_for(tmp_path, monkeypatch):
    """Run from outside the repository, the default `models` was "no model manifest at models/manifest.json:
    export a model first", though the shipped models were one folder away."""
    from inference.manifest import ManifestError

    monkeypatch.chdir(tmp_path)
    with pytest.raises(ManifestError) as refused:
        load_manifest("models")
    assert str(refused.value) == (
        f"no model manifest at models/manifest.json (a relative folder is read from the current one, {tmp_path}): "
        "give the models folder that holds one, or export a model first (python -m export ...)"
    )
    with pytest.raises(ManifestError, match=f"^no model manifest at {tmp_path}/none/manifest.json: give the"):
        load_manifest(tmp_path / "none")  # an absolute folder is where it says


@pytest.mark.parametrize(
    "images",
    [np.full((2, 32, 32, 3), 0.5, dtype=np.float32), np.zeros((2, 3, 32, 32), dtype=np.uint8), np.zeros((32, 32, 3))],
)
def test_to_model_input_refuses_what_it_would_scale_into_nonsense(images):
    with pytest.raises(UsageError, match=r"uint8 \[N, H, W, 3\] images .*, got "):
        to_model_input(images)


def test_to_model_input_takes_a_list_of_decoded_images():
    images = [np.full((32, 32, 3), value, dtype=np.uint8) for value in (0, 255)]
    assert to_model_input(images)[:, 0, 0, 0].tolist() == [0.0, 1.0]


def _model_with_card(path, card: str):
    """A one-node ONNX file whose metadata holds ``card`` as its model card."""
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Identity", ["input"], ["logits"])],
        "card",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 2])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 2])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)
    helper.set_model_props(model, {METADATA_KEY: card})
    onnx.save(model, path)
    return path


@pytest.mark.parametrize(
    ("change", "problem"),
    [({"future_field": 1}, r"future_field: no such setting"), ({"precision": "int4"}, r"precision: Input should be")],
)
def test_a_card_of_another_schema_is_refused_in_one_line_naming_the_field(tmp_path, change, problem):
    card = load_manifest(ROOT / "models", verify=False).models[0].model_dump(mode="json", exclude={"file", "sha256"})
    path = _model_with_card(tmp_path / "m.onnx", json.dumps({**card, **change}))
    with pytest.raises(UsageError, match=rf"not a model card this version reads \({problem}.*export it again") as info:
        read_card(path)
    assert "\n" not in str(info.value) and "errors.pydantic.dev" not in str(info.value)


def test_a_card_that_is_not_json_is_refused_as_one(tmp_path):
    with pytest.raises(UsageError, match=r"not a model card this version reads \(Invalid JSON"):
        read_card(_model_with_card(tmp_path / "m.onnx", '{"name": '))


def test_an_atomic_write_syncs_its_folder_after_the_rename(tmp_path, atomic_writes):
    """The file was synced, then renamed, but the rename lived only in the folder's unsynced entry: a power loss
    could undo it."""
    from inference.files import write_text_atomic

    synced, replaced = atomic_writes
    write_text_atomic(tmp_path / "history.json", "[]")
    assert replaced["history.json"] in synced and str(tmp_path) in synced
    assert (tmp_path / "history.json").read_text() == "[]"

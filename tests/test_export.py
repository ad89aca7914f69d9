"""Export: ONNX graph contract, parity with PyTorch, FP16/INT8 variants, manifest integrity."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from export.__main__ import main as export_main
from export.parity import ACCURACY_TOLERANCE_POINTS
from export.pipeline import ParityError, export_checkpoint
from service.manifest import METADATA_KEY, ManifestError, load_manifest
from service.preprocess import decode_image, to_model_input
from service.runtime import OnnxClassifier, read_card
from training.checkpoint import load_checkpoint, model_from_checkpoint
from training.data import load_split


@pytest.fixture(scope="module")
def exported(tiny_run, tmp_path_factory):
    models = tmp_path_factory.mktemp("models")
    entry, parity = export_checkpoint(tiny_run / "best.pt", "tiny", "fp32", models, cache_dir=None)
    return models, entry, parity


def test_fp32_graph_contract(exported):
    models, entry, _ = exported
    proto = onnx.load(str(models / entry.file))
    onnx.checker.check_model(proto, full_check=True)
    assert proto.opset_import[0].version >= 17
    (inp,) = proto.graph.input
    assert inp.name == "input"
    dims = inp.type.tensor_type.shape.dim
    assert dims[0].dim_param and [d.dim_value for d in dims[1:]] == [3, 32, 32]
    assert inp.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert proto.graph.output[0].name == "logits"
    card = json.loads({p.key: p.value for p in proto.metadata_props}[METADATA_KEY])
    assert card["classes"] == ["alpha", "beta", "gamma"] and card["precision"] == "fp32"


def test_fp32_parity_and_dynamic_batch(exported, tiny_run):
    models, entry, parity = exported
    assert parity.passed and parity.top1_agreement == 1.0 and parity.max_abs_prob_diff < 1e-4
    clf = OnnxClassifier(models / entry.file, device="cpu")
    for n in (1, 7):
        assert clf.logits(np.random.rand(n, 3, 32, 32).astype(np.float32)).shape == (n, 3)


def test_normalisation_in_graph_matches_training_path(exported, tiny_run, image_folder):
    """Same image through the service's decode path + ONNX and the training loader + PyTorch: same logits."""
    models, entry, _ = exported
    path = sorted((image_folder / "beta").iterdir())[0]
    served = to_model_input([decode_image(path.read_bytes())])
    onnx_logits = OnnxClassifier(models / entry.file, device="cpu").logits(served)

    ckpt = load_checkpoint(tiny_run / "best.pt")
    data = load_split("folder", image_folder, "all")  # the training reader, uint8 -> /255 as the loader does
    index = sorted(p for d in sorted(image_folder.iterdir()) for p in sorted(d.iterdir())).index(path)
    x = torch.from_numpy(data.images[index : index + 1]).permute(0, 3, 1, 2).float() / 255
    with torch.no_grad():
        torch_logits = model_from_checkpoint(ckpt)(x).numpy()
    np.testing.assert_allclose(onnx_logits, torch_logits, atol=1e-4)


def test_flip_tta_inside_the_graph(tiny_run, tmp_path):
    entry, parity = export_checkpoint(tiny_run / "best.pt", "tiny-tta", "fp32", tmp_path, cache_dir=None, tta="flip")
    assert parity.passed and parity.top1_agreement == 1.0 and entry.source["tta"] == "flip"
    clf = OnnxClassifier(tmp_path / entry.file, device="cpu")
    x = np.random.default_rng(0).random((4, 3, 32, 32), dtype=np.float32)
    mirrored = np.ascontiguousarray(x[..., ::-1])
    # The averaged model cannot tell an image from its mirror, and it is the mean of the plain model's two logits.
    np.testing.assert_allclose(clf.logits(x), clf.logits(mirrored), atol=1e-5)
    with torch.no_grad():
        plain = model_from_checkpoint(load_checkpoint(tiny_run / "best.pt")).eval()
        expected = (plain(torch.from_numpy(x)) + plain(torch.from_numpy(mirrored))).numpy() / 2
    np.testing.assert_allclose(clf.logits(x), expected, atol=1e-4)


def test_fp16_and_int8_variants(tiny_run, tmp_path):
    for precision in ("fp16", "int8"):
        try:
            entry, parity = export_checkpoint(tiny_run / "best.pt", f"tiny-{precision}", precision, tmp_path, cache_dir=None)
        except ParityError as exc:  # a toy model on 15 images may miss by one image; the figures must still be there
            pytest.fail(f"{precision} variant failed parity on the toy model: {exc}")
        proto = onnx.load(str(tmp_path / entry.file))
        types = {init.data_type for init in proto.graph.initializer}
        if precision == "fp16":
            assert onnx.TensorProto.FLOAT16 in types
        else:
            assert onnx.TensorProto.INT8 in types and "calibration" in entry.source
        # inputs and outputs stay float32 for clients
        assert proto.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
        assert abs(parity.accuracy_diff_points) <= ACCURACY_TOLERANCE_POINTS[precision]
    assert load_manifest(tmp_path).default == "tiny-fp16"  # the first model exported becomes the default


def test_parity_failure_exits_nonzero(tiny_run, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(ACCURACY_TOLERANCE_POINTS, "fp32", -1.0)  # nothing can meet a negative tolerance
    code = export_main(["--checkpoint", str(tiny_run / "best.pt"), "--name", "bad", "--models-dir", str(tmp_path),
                        "--cache-dir", str(tmp_path / "c")])
    assert code == 1
    assert "accuracy differs" in capsys.readouterr().err
    assert not (tmp_path / "bad.onnx").exists()


def test_lone_file_describes_itself(exported):
    models, entry, _ = exported
    card = read_card(models / entry.file)
    assert card.name == "tiny" and card.input.shape == (3, 32, 32) and len(card.input.mean) == 3


def _copy_models(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def test_manifest_errors(exported, tmp_path):
    models, entry, _ = exported
    m = _copy_models(models, tmp_path / "m")
    raw = json.loads((m / "manifest.json").read_text())

    bad = dict(raw, default="nope")
    (m / "manifest.json").write_text(json.dumps(bad))
    with pytest.raises(ManifestError, match="default model 'nope'"):
        load_manifest(m)

    bad = json.loads(json.dumps(raw))
    del bad["models"][0]["sha256"]
    (m / "manifest.json").write_text(json.dumps(bad))
    with pytest.raises(ManifestError, match="sha256"):
        load_manifest(m)

    (m / "manifest.json").write_text(json.dumps(raw))
    with open(m / entry.file, "r+b") as f:  # truncate the model file
        f.truncate(1000)
    with pytest.raises(ManifestError, match=r"tiny.onnx does not match"):
        load_manifest(m)


def test_verify_command(exported, tmp_path, capsys):
    models, entry, _ = exported
    m = _copy_models(models, tmp_path / "m")
    assert export_main(["verify", "tiny", "--models-dir", str(m), "--cache-dir", str(tmp_path / "c")]) == 0
    assert "verified" in capsys.readouterr().out
    data = bytearray((m / entry.file).read_bytes())
    data[-10] ^= 0xFF  # tamper with one byte
    (m / entry.file).write_bytes(bytes(data))
    assert export_main(["verify", "tiny", "--models-dir", str(m)]) == 2
    assert "tiny.onnx" in capsys.readouterr().err

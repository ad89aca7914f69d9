"""Export: ONNX graph contract, parity with PyTorch, temperature scaling in the graph, FP16/INT8 variants,
manifest integrity."""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from export.__main__ import main as export_main
from export.onnx_export import export_fp32
from export.pipeline import ParityError, export_checkpoint
from export.variants import CONVERTERS, converter
from export.verify import verify_model
from inference.errors import UsageError
from inference.manifest import METADATA_KEY, ManifestError, ModelCard, load_manifest
from inference.messages import counted
from inference.precisions import PRECISIONS
from inference.preprocess import decode_image, to_model_input
from inference.runtime import OnnxClassifier, read_card
from training.checkpoint import load_checkpoint, model_from_checkpoint
from training.data import load_split
from training.inference import with_tta


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
    """Same image through the service's decode path + ONNX and the training loader + PyTorch: same logits
    (divided by the model's temperature)."""
    models, entry, _ = exported
    path = sorted((image_folder / "beta").iterdir())[0]
    served = to_model_input([decode_image(path.read_bytes(), fit=entry.input.fit)])
    onnx_logits = OnnxClassifier(models / entry.file, device="cpu").logits(served)

    ckpt = load_checkpoint(tiny_run / "best.pt")
    data = load_split("folder", image_folder, "all")  # the training reader, uint8 -> /255 as the loader does
    index = sorted(p for d in sorted(image_folder.iterdir()) for p in sorted(d.iterdir())).index(path)
    x = torch.from_numpy(data.images[index : index + 1]).permute(0, 3, 1, 2).float() / 255
    with torch.no_grad():
        torch_logits = model_from_checkpoint(ckpt)(x).numpy()
    np.testing.assert_allclose(onnx_logits, torch_logits / entry.calibration.temperature, atol=1e-4)


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
    np.testing.assert_allclose(clf.logits(x), expected / entry.calibration.temperature, atol=1e-4)


def _plain_logits(tiny_run: Path, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model_from_checkpoint(load_checkpoint(tiny_run / "best.pt")).eval()(torch.from_numpy(x)).numpy()


def test_graph_divides_by_the_recorded_temperature(exported, tiny_run):
    """Calibration is on by default: the card records T, and the graph's logits are PyTorch's divided by it."""
    models, entry, parity = exported
    card = read_card(models / entry.file)
    assert card.calibration == entry.calibration and card.calibration.method == "temperature"
    t = card.calibration.temperature
    assert abs(np.log(t)) > 0.05, f"T = {t} is too close to 1 for this test to tell a division from none"
    x = np.random.default_rng(1).random((5, 3, 32, 32), dtype=np.float32)
    np.testing.assert_allclose(
        OnnxClassifier(models / entry.file, device="cpu").logits(x),
        _plain_logits(tiny_run, x) / t,
        rtol=1e-4,
        atol=1e-4,
    )
    assert parity.top1_agreement == 1.0 and parity.max_abs_prob_diff < 1e-4  # against PyTorch with the same T
    calibration = entry.metrics["calibration"]
    assert calibration["temperature"] == t and calibration["samples"] == parity.samples
    # T minimises the validation NLL, so it cannot be worse than no temperature there; accuracy does not move.
    assert calibration["after"]["nll"] < calibration["before"]["nll"]
    assert calibration["after"]["accuracy"] == calibration["before"]["accuracy"] == pytest.approx(parity.onnx_top1)
    assert calibration["refit"]["temperature"] == pytest.approx(t, rel=1e-3)  # FP32: its own logits are PyTorch's


def test_calibrate_none_exports_the_graph_of_before(tiny_run, tmp_path):
    """``--calibrate none``: no division, and the very graph the exporter makes of the plain checkpoint."""
    assert (
        export_main(
            [
                "--checkpoint",
                str(tiny_run / "best.pt"),
                "--name",
                "plain",
                "--models-dir",
                str(tmp_path),
                "--calibrate",
                "none",
                "--cache-dir",
                str(tmp_path / "c"),
            ]
        )
        == 0
    )
    entry = load_manifest(tmp_path).get("plain")
    assert entry.calibration.method == "none" and entry.calibration.temperature == 1.0
    assert entry.metrics["calibration"]["before"] == entry.metrics["calibration"]["after"]
    reference = tmp_path / "reference.onnx"  # what export made before calibration existed: the plain model's graph
    export_fp32(with_tta(model_from_checkpoint(load_checkpoint(tiny_run / "best.pt")), "none"), reference, 32)
    graph = onnx.load(str(tmp_path / entry.file)).graph
    assert graph == onnx.load(str(reference)).graph  # same nodes, same weights, node for node
    x = np.random.default_rng(2).random((5, 3, 32, 32), dtype=np.float32)
    np.testing.assert_allclose(
        OnnxClassifier(tmp_path / entry.file, device="cpu").logits(x), _plain_logits(tiny_run, x), atol=1e-4
    )


def test_fp16_and_int8_variants(tiny_run, tmp_path):
    temperatures = {}
    for precision in ("fp16", "int8"):
        try:
            entry, parity = export_checkpoint(
                tiny_run / "best.pt", f"tiny-{precision}", precision, tmp_path, cache_dir=None
            )
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
        assert abs(parity.accuracy_diff_points) <= PRECISIONS[precision].tolerance_points
        temperatures[precision] = entry.calibration.temperature
        assert set(entry.metrics["calibration"]) >= {"before", "after", "refit"}  # shared T against the variant's own
    assert load_manifest(tmp_path).default == "tiny-fp16"  # the first model exported becomes the default
    # T is fitted on the checkpoint's FP32 logits, so every precision of it divides by the same T.
    fp32 = export_checkpoint(tiny_run / "best.pt", "tiny-fp32", "fp32", tmp_path, cache_dir=None)[0]
    assert temperatures == {"fp16": fp32.calibration.temperature, "int8": fp32.calibration.temperature}


def test_every_precision_has_a_converter_and_the_card_accepts_it():
    """A precision is one entry of inference.precisions plus its converter in export/variants.py."""
    assert list(CONVERTERS) and set(CONVERTERS) == set(PRECISIONS)
    card_type = ModelCard.model_json_schema()["properties"]["precision"]
    assert card_type["enum"] == list(PRECISIONS)
    with pytest.raises(ValueError, match="unknown precision 'fp8'; valid: fp32, fp16, int8"):
        converter("fp8")


def test_parity_failure_exits_nonzero(tiny_run, tmp_path, monkeypatch, capsys):
    # nothing can meet a negative tolerance
    monkeypatch.setitem(PRECISIONS, "fp32", dataclasses.replace(PRECISIONS["fp32"], tolerance_points=-1.0))
    code = export_main(
        [
            "--checkpoint",
            str(tiny_run / "best.pt"),
            "--name",
            "bad",
            "--models-dir",
            str(tmp_path),
            "--cache-dir",
            str(tmp_path / "c"),
            "--no-reference-cache",
        ]
    )
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


def test_an_export_into_a_folder_whose_manifest_is_broken_leaves_the_shipped_file(tiny_run, exported, tmp_path):
    """The manifest is read, and a broken one refused, before the verified graph replaces the shipped file: the
    file stays the one the manifest lists."""
    models, entry, _ = exported
    m = _copy_models(models, tmp_path / "m")
    raw = json.loads((m / "manifest.json").read_text())
    (m / "manifest.json").write_text(json.dumps(dict(raw, default="nope")))
    before = (m / entry.file).read_bytes()
    with pytest.raises(ManifestError, match="default model 'nope'"):
        export_checkpoint(tiny_run / "best.pt", entry.name, "fp32", m, cache_dir=None, calibrate="none")
    assert (m / entry.file).read_bytes() == before
    assert sorted(p.name for p in m.iterdir()) == sorted(p.name for p in models.iterdir())  # no stray files


def test_a_manifest_entry_whose_file_is_outside_the_folder_or_whose_accuracy_is_no_fraction_is_refused(
    exported, tmp_path, capsys
):
    """`remove` used to delete a file named ../outside.onnx beside the models folder, and `list` to end in a
    TypeError on a val_top1 of null."""
    models, entry, _ = exported
    m = _copy_models(models, tmp_path / "m")
    (tmp_path / "outside.onnx").write_bytes((m / entry.file).read_bytes())
    raw = json.loads((m / "manifest.json").read_text())
    second = dict(raw["models"][0], name="second", file="../outside.onnx")
    for broken, said in (
        ({**raw, "models": [*raw["models"], second]}, "models.1.file: String should match pattern"),
        ({**raw, "models": [dict(raw["models"][0], metrics={"val_top1": None})]}, "val_top1 must be a fraction"),
        # a hand-edited count: `list` ended in "ValueError: Cannot specify ',' with 's'."
        (
            {**raw, "models": [dict(raw["models"][0], metrics={"val_top1": 0.5, "val_samples": "5000"})]},
            "val_samples must be a whole number of images, not '5000'",
        ),
    ):
        (m / "manifest.json").write_text(json.dumps(broken))
        for command in (["remove", "second"], ["list"]):
            assert export_main([*command, "--models-dir", str(m)]) == 2
            err = capsys.readouterr().err
            assert said in err and "Traceback" not in err, err
    assert (tmp_path / "outside.onnx").is_file()


def test_a_re_export_keeps_its_place_in_the_manifest(tiny_run, exported, tmp_path):
    """Replacing a listed model (a new run, a new INT8 conversion) changes its entry where it stands: the listing
    keeps its order and the manifest's diff is that entry's alone."""
    models, entry, _ = exported
    m = _copy_models(models, tmp_path / "m")
    export_checkpoint(tiny_run / "best.pt", "tiny-second", "fp32", m, cache_dir=None, calibrate="none")
    before = json.loads((m / "manifest.json").read_text())
    export_checkpoint(tiny_run / "best.pt", entry.name, "fp32", m, cache_dir=None, calibrate="none", replace=True)
    after = json.loads((m / "manifest.json").read_text())
    assert [e["name"] for e in after["models"]] == [e["name"] for e in before["models"]] == [entry.name, "tiny-second"]
    assert after["models"][1] == before["models"][1]


@pytest.mark.parametrize("stop", ["ctrl-c", "sigterm"])
def test_a_stop_during_an_export_leaves_the_models_folder_as_it_was(
    stop, tiny_run, exported, tmp_path, monkeypatch, capsys
):
    """Stopped while the new graph is being verified, by Ctrl-C or a scheduler's SIGTERM: one line and exit
    130/143, no traceback, and the folder holds what it held (the shipped file, its manifest, no temporary
    folder)."""
    import os
    import signal

    import export.pipeline

    models, entry, _ = exported
    m = _copy_models(models, tmp_path / "m")
    before = {p.name: p.read_bytes() for p in m.iterdir() if p.is_file()}

    def stopped(*args, **kwargs):
        if stop == "sigterm":
            os.kill(os.getpid(), signal.SIGTERM)  # its handler raises at the next instruction
        raise KeyboardInterrupt

    monkeypatch.setattr(export.pipeline, "parity_against", stopped)
    argv = ["--checkpoint", str(tiny_run / "best.pt"), "--name", entry.name, "--models-dir", str(m), "--replace"]
    status = export_main([*argv, "--calibrate", "none", "--no-reference-cache"])
    said = "SIGTERM: interrupted: nothing was written\n" if stop == "sigterm" else "interrupted: nothing was written\n"
    assert (status, capsys.readouterr().err.endswith(said)) == (143 if stop == "sigterm" else 130, True)
    assert {p.name: p.read_bytes() for p in m.iterdir()} == before


@pytest.fixture
def ctrl_c_as_in_a_shell():
    """Python's own SIGINT handler, which raises KeyboardInterrupt: a test process that a shell without job
    control started in the background (``pytest &`` in a script) inherits SIGINT ignored, where Ctrl-C does
    nothing at all."""
    import signal

    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def test_a_stop_while_a_model_is_recorded_waits_for_the_record_and_a_failed_record_restores_the_old_file(
    tiny_run, exported, tmp_path, monkeypatch, capsys, ctrl_c_as_in_a_shell
):
    """The graph's rename and the manifest's save happen together or not at all: a Ctrl-C between them used to
    leave the new graph under the old sha256 (the service refusing to start) and say nothing was written; a
    manifest that cannot be saved (a full disk) used to leave the old graph replaced all the same."""
    import errno
    import signal

    import export.record
    from inference.manifest import verify_file

    models, entry, _ = exported
    argv = ["--checkpoint", str(tiny_run / "best.pt"), "--name", entry.name, "--calibrate", "none"]
    argv += ["--no-reference-cache", "--tta", "flip", "--replace"]  # another graph than the shipped one
    save = export.record.save_manifest

    def stopped_between(manifest, models_dir):
        signal.raise_signal(signal.SIGINT)  # Ctrl-C after the graph's rename, before the manifest's save
        return save(manifest, models_dir)

    m = _copy_models(models, tmp_path / "stopped")
    monkeypatch.setattr(export.record, "save_manifest", stopped_between)
    assert export_main([*argv, "--models-dir", str(m)]) == 130
    assert capsys.readouterr().err.endswith(
        f"interrupted: {entry.name} was recorded in {m / 'manifest.json'} before the stop\n"
    )
    recorded = load_manifest(m, verify=False).get(entry.name)
    verify_file(recorded, m)  # the file is the one its manifest lists
    assert recorded.source["tta"] == "flip" and sorted(p.name for p in m.iterdir()) == sorted(
        p.name for p in models.iterdir()
    )

    def full_disk(manifest, models_dir):
        raise OSError(errno.ENOSPC, "No space left on device", str(models_dir / "manifest.json"))

    m = _copy_models(models, tmp_path / "full")
    before = {p.name: p.read_bytes() for p in m.iterdir()}
    monkeypatch.setattr(export.record, "save_manifest", full_disk)
    assert export_main([*argv, "--models-dir", str(m)]) == 2
    assert "No space left on device" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in m.iterdir()} == before


def test_a_stop_that_torchs_exporter_reports_as_its_own_failure_is_said_as_a_stop(
    tiny_run, exported, tmp_path, monkeypatch, capsys
):
    """Ctrl-C while the exporter imports its parts surfaces as a failed export (an AttributeError of a half-imported
    module, raised from the KeyboardInterrupt): it used to print a hundred-line traceback and exit 1."""
    import export.pipeline

    models, entry, _ = exported
    m = _copy_models(models, tmp_path / "m")
    before = {p.name: p.read_bytes() for p in m.iterdir()}

    def exporter_stopped(*args, **kwargs):
        try:
            try:
                raise KeyboardInterrupt
            except KeyboardInterrupt:
                raise AttributeError("module 'torch._dynamo' has no attribute 'exc'")  # noqa: B904
        except AttributeError as exc:
            raise RuntimeError("Failed to export the model with torch.export") from exc

    monkeypatch.setattr(export.pipeline, "export_fp32", exporter_stopped)
    argv = ["--checkpoint", str(tiny_run / "best.pt"), "--name", entry.name, "--models-dir", str(m), "--replace"]
    assert export_main([*argv, "--calibrate", "none", "--no-reference-cache"]) == 130
    assert capsys.readouterr().err.endswith("interrupted: nothing was written\n")
    assert {p.name: p.read_bytes() for p in m.iterdir()} == before
    monkeypatch.setattr(export.pipeline, "export_fp32", lambda *a, **k: 1 / 0)  # a failure of its own: a bug
    with pytest.raises(ZeroDivisionError):
        export_main([*argv, "--calibrate", "none", "--no-reference-cache"])


def test_a_mistyped_command_or_a_folder_in_the_graphs_place_is_refused_first_and_a_replacement_is_said(
    tiny_run, exported, tmp_path, capsys, caplog
):
    import logging

    models, entry, _ = exported
    for typo in ("lst", "verfy"):  # used to say "the following arguments are required: --checkpoint, --name"
        assert export_main([typo, "--models-dir", str(models)]) == 2
        assert f"unknown command {typo!r}" in capsys.readouterr().err
    m = _copy_models(models, tmp_path / "m")
    (m / "other.onnx").mkdir()  # used to fail after the whole export, naming a temporary file
    argv = ["--checkpoint", str(tiny_run / "best.pt"), "--models-dir", str(m), "--calibrate", "none"]
    argv += ["--no-reference-cache"]
    assert export_main([*argv, "--name", "other"]) == 2
    assert f"{m / 'other.onnx'} is not a file (a folder?)" in capsys.readouterr().err
    with caplog.at_level(logging.INFO, logger="export"):
        assert export_main([*argv, "--name", entry.name, "--replace"]) == 0
    assert f"{entry.name!r} is listed in {m / 'manifest.json'}: the new graph replaces it once verified" in caplog.text
    assert "exporting the network to ONNX" in caplog.text


def test_export_list_reads_the_folder_it_is_given(exported, capsys):
    models, entry, _ = exported
    assert export_main(["list", "--models-dir", str(models)]) == 0
    assert entry.name in capsys.readouterr().out


def test_verify_command(exported, tmp_path, capsys):
    models, entry, _ = exported
    m = _copy_models(models, tmp_path / "m")
    args = ["--models-dir", str(m), "--cache-dir", str(tmp_path / "c"), "--reference-cache", str(tmp_path / "r")]
    assert export_main(["verify", "tiny", *args]) == 0
    out = capsys.readouterr().out
    assert "verified" in out and "refit on this model's own logits" in out
    # The checkpoint is rebuilt with the recorded temperature: the probabilities agree, not just the top-1
    # (dividing by T moves no argmax, so agreement alone would not notice a missing T).
    parity, calibration = verify_model("tiny", m, cache_dir=None)
    assert parity.max_abs_prob_diff < 1e-4 and calibration["temperature"] == entry.calibration.temperature
    assert calibration["after"] == pytest.approx(entry.metrics["calibration"]["after"])
    data = bytearray((m / entry.file).read_bytes())
    data[-10] ^= 0xFF  # tamper with one byte
    (m / entry.file).write_bytes(bytes(data))
    assert export_main(["verify", "tiny", "--models-dir", str(m)]) == 2
    assert "tiny.onnx" in capsys.readouterr().err


def test_verify_judges_the_cards_figure_and_only_the_named_models_file(exported, tiny_run, tmp_path, capsys, caplog):
    """The manifest is not hashed: a val_top1 edited by hand (or left from another file) was shown by `list`,
    the card table and /models, and verify passed. And another model's tampered file blocked verify NAME."""
    import logging

    models, entry, _ = exported
    m = _copy_models(models, tmp_path / "m")
    export_checkpoint(tiny_run / "best.pt", "second", "fp32", m, cache_dir=None, calibrate="none")
    args = ["--models-dir", str(m), "--cache-dir", str(tmp_path / "c"), "--no-reference-cache"]
    raw = json.loads((m / "manifest.json").read_text())
    (card,) = [e for e in raw["models"] if e["name"] == "tiny"]
    true_top1 = card["metrics"]["val_top1"]
    card["metrics"]["val_top1"] = 0.99
    (m / "manifest.json").write_text(json.dumps(raw))
    assert export_main(["verify", "tiny", *args]) == 1
    err = capsys.readouterr().err
    assert f"the manifest says val_top1 99.00% on these {card['metrics']['val_samples']} images" in err, err
    card["metrics"]["val_top1"] = true_top1
    (m / "manifest.json").write_text(json.dumps(raw))
    (m / "second.onnx").write_bytes((m / "second.onnx").read_bytes()[:-10])  # another model's file, truncated
    with caplog.at_level(logging.WARNING, logger="export"):
        assert export_main(["verify", "tiny", *args]) == 0
    assert "verified" in capsys.readouterr().out and "model 'second': file" in caplog.text
    assert export_main(["verify", "second", *args]) == 2
    # rederive and recover of this model go on too (they refused another model's file as verify did)
    derived = ["rederive", "tiny", "--name", "tiny-r", "--calibrate", "none", "--models-dir", str(m)]
    assert export_main([*derived, "--cache-dir", str(tmp_path / "c")]) == 0
    capsys.readouterr()
    # a file that cannot be read is a problem of that model's, named, not an error of the listing
    import inference.manifest

    hashed = inference.manifest.sha256_file

    def unreadable(path):
        if Path(path).name == "tiny-r.onnx":
            raise PermissionError(13, "Permission denied", str(path))
        return hashed(path)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(inference.manifest, "sha256_file", unreadable)
        assert export_main(["list", "--models-dir", str(m)]) == 1
    assert "tiny-r.onnx cannot be read (Permission denied)" in capsys.readouterr().err
    # list marks it, names why, and fails; it still lists every model
    assert export_main(["list", "--models-dir", str(m)]) == 1
    listed = capsys.readouterr()
    lines = {line.lstrip("* ").split()[0]: line for line in listed.out.splitlines()}
    assert "BROKEN" in lines["second"] and "BROKEN" not in lines["tiny"], listed.out
    assert f"({card['metrics']['val_samples']} images)" in lines["tiny"], listed.out
    assert "error: model 'second': file" in listed.err


def test_a_listed_model_is_replaced_only_when_asked_and_never_by_a_quick_check(
    exported, tiny_run, tmp_path, capsys, monkeypatch
):
    """An export under a listed name replaced the shipped file and its figures with no flag, and an export with
    --max-val-images (a quick check) put its figures on a handful of images in their place."""
    import export.pipeline
    import export.rederive  # imported before the patch: it binds validation_split when first imported

    models, entry, _ = exported
    m = _copy_models(models, tmp_path / "m")
    before = {p.name: p.read_bytes() for p in m.iterdir()}

    def never(*args, **kwargs):
        raise AssertionError("the validation split was read")

    monkeypatch.setattr(export.pipeline, "validation_split", never)
    monkeypatch.setattr(export.rederive, "validation_split", never)
    argv = ["--checkpoint", str(tiny_run / "best.pt"), "--name", "tiny", "--models-dir", str(m)]
    samples = entry.metrics["val_samples"]
    assert export_main(argv) == 2
    err = capsys.readouterr().err
    assert f"'tiny' is already listed in {m / 'manifest.json'}" in err and "pass --replace" in err, err
    assert f"on {samples} images" in err
    assert export_main([*argv, "--replace", "--max-val-images", str(samples - 1)]) == 2
    assert f"--max-val-images {samples - 1} would replace the figures of 'tiny' (" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in m.iterdir()} == before
    # rederive too, unless the name is the reference's own (which it replaces by design)
    raw = json.loads((m / "manifest.json").read_text())
    raw["models"].append(dict(raw["models"][0], name="tiny-b", file="tiny-b.onnx"))
    (m / "manifest.json").write_text(json.dumps(raw))
    (m / "tiny-b.onnx").write_bytes((m / entry.file).read_bytes())
    assert export_main(["rederive", "tiny", "--name", "tiny-b", "--calibrate", "none", "--models-dir", str(m)]) == 2
    assert "'tiny-b' is already listed" in capsys.readouterr().err
    # a name that is a file name, and a command after the options, are named as the mistakes they are
    with pytest.raises(SystemExit):
        export_main(["--checkpoint", str(tiny_run / "best.pt"), "--name", "x.onnx", "--models-dir", str(m)])
    assert "give the name without .onnx" in capsys.readouterr().err
    assert export_main(["--models-dir", str(m), "list"]) == 2
    assert "put the command first: python -m export list" in capsys.readouterr().err


def test_verify_of_a_model_whose_dataset_has_moved_asks_for_data(exported, tmp_path, capsys):
    models, entry, _ = exported
    m = _copy_models(models, tmp_path / "m")
    raw = json.loads((m / "manifest.json").read_text())
    raw["models"][0]["source"]["data_root"] = str(tmp_path / "gone")
    (m / "manifest.json").write_text(json.dumps(raw))
    assert export_main(["verify", "tiny", "--models-dir", str(m), "--no-reference-cache"]) == 2
    err = capsys.readouterr().err
    assert "does not exist; give --data ROOT, where that dataset is now" in err and "Traceback" not in err, err


def test_verify_reads_the_manifests_relative_paths_from_the_project_from_any_folder(
    exported, tiny_run, image_folder, tmp_path, monkeypatch, capsys
):
    """The shipped manifest records the data and checkpoint relative to the project (`../shared/...`,
    `runs/...`, where the exports ran): `export verify` from another folder read them from there, found
    neither, and asked for --data."""
    models, entry, _ = exported
    project = tmp_path / "project"
    m = _copy_models(models, project / "models")
    (project / "runs").mkdir()
    shutil.copytree(tiny_run, project / "runs" / "tiny")
    shutil.copytree(image_folder, project / "data")
    raw = json.loads((m / "manifest.json").read_text())
    (card,) = [e for e in raw["models"] if e["name"] == "tiny"]
    card["source"] |= {"data_root": "data", "checkpoint": "runs/tiny/best.pt"}
    (m / "manifest.json").write_text(json.dumps(raw))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert export_main(["verify", "tiny", "--models-dir", str(m), "--no-reference-cache"]) == 0, capsys.readouterr()
    out = capsys.readouterr()
    assert "verified" in out.out and "no usable checkpoint" not in out.err  # the checkpoint was found and run


def test_rederive_calibrates_and_converts_a_shipped_fp32_graph_without_its_checkpoint(tiny_run, tmp_path):
    import onnx

    from export.__main__ import main
    from export.pipeline import export_checkpoint
    from export.rederive import rederive
    from inference.manifest import load_manifest
    from inference.runtime import OnnxClassifier

    models = tmp_path / "models"
    export_checkpoint(tiny_run / "best.pt", "raw", "fp32", models, cache_dir=None, calibrate="none")
    entry, parity = rederive("raw", "cal", "fp32", models, cache_dir=None)
    t = entry.calibration.temperature
    assert entry.calibration.method == "temperature" and t != 1.0
    assert parity.passed and parity.top1_agreement == 1.0
    assert entry.source["derived_from"]["name"] == "raw" and entry.source["checkpoint"] == str(tiny_run / "best.pt")
    x = np.random.default_rng(0).random((4, 3, 32, 32), dtype=np.float32)
    raw_logits = OnnxClassifier(models / "raw.onnx", device="cpu").logits(x)
    cal_logits = OnnxClassifier(models / "cal.onnx", device="cpu").logits(x)
    assert np.allclose(cal_logits, raw_logits / t, rtol=1e-5, atol=1e-6)
    assert [n.op_type for n in onnx.load(str(models / "cal.onnx")).graph.node][-1] == "Div"
    assert entry.metrics["calibration"]["after"]["nll"] <= entry.metrics["calibration"]["before"]["nll"]

    int8, int8_parity = rederive("raw", "cal-int8", "int8", models, cache_dir=None, make_default=True)
    assert int8_parity.passed and int8.calibration.temperature == t
    assert load_manifest(models).default == "cal-int8"
    with pytest.raises(ValueError, match="re-derive from an FP32 graph"):
        rederive("cal-int8", "x", "fp32", models, cache_dir=None)
    with pytest.raises(ValueError, match="already calibrated"):
        rederive("cal", "x", "fp32", models, cache_dir=None)
    # --calibrate none from a calibrated graph: the division is already in it, and so is its record
    same, same_parity = rederive(
        "cal", "cal-copy", "fp32", models, calibrate="none", cache_dir=None, default_for=["cuda"]
    )
    assert same.calibration == entry.calibration and same_parity.passed and same_parity.top1_agreement == 1.0
    assert np.allclose(OnnxClassifier(models / "cal-copy.onnx", device="cpu").logits(x), cal_logits, atol=1e-6)
    assert load_manifest(models).default_for("cuda").name == "cal-copy"
    # The same name replaces the reference in the manifest; the CLI refuses an unknown reference with exit 2.
    rederive("raw", "raw", "fp32", models, cache_dir=None)
    replaced = load_manifest(models).get("raw")
    assert replaced.calibration.temperature == t and replaced.source["derived_from"]["sha256"] != replaced.sha256
    assert main(["rederive", "nope", "--name", "y", "--models-dir", str(models)]) == 2


def test_a_check_without_the_checkpoint_says_so_instead_of_printing_nan():
    """`export verify` in a fresh clone has no checkpoint: it compares with the recorded PyTorch top-1 only,
    and its summary must not pretend to a per-image agreement it did not measure."""
    from export.parity import judge

    labels = np.array([0, 1, 1, 0])
    probs = np.eye(2)[[0, 1, 0, 0]]
    alone = judge("fp32", None, probs, labels, 0.75, float("nan"), 100.0)
    assert alone.passed and not alone.compared
    assert "nan" not in alone.summary() and "recorded at export" in alone.summary()
    beside = judge("fp32", probs, probs, labels, 0.75, 50.0, 100.0)
    assert beside.compared and "top-1 agreement 100.00%" in beside.summary()
    assert not judge("fp32", None, probs, labels, 0.25, float("nan"), 100.0).passed


def test_each_precision_is_held_to_its_agreement_and_probability_limits():
    from export.parity import judge

    labels = np.zeros(1000, dtype=int)
    reference = np.tile([0.7, 0.2, 0.1], (1000, 1))

    def check(precision: str, flipped: int, shift: float = 0.0):
        probs = reference + [shift, -shift, 0.0]
        probs[:flipped] = [0.2, 0.7, 0.1]
        same_accuracy = float((probs.argmax(1) == labels).mean())  # so that only agreement and |dp| are judged
        return judge(precision, reference, probs, labels, same_accuracy, 1.0, 1.0).failures

    for name, entry in PRECISIONS.items():
        allowed = int(1000 * (1 - entry.min_agreement))
        assert not any("agreement" in failure for failure in check(name, allowed))
        assert any(f"is below {100 * entry.min_agreement:g}% for {name}" in f for f in check(name, allowed + 1))
    assert check("fp32", 0, 5e-5) == []
    assert check("fp32", 0, 2e-4) == ["a probability differs by 2.00e-04 (at most 0.0001 for fp32)"]
    assert check("fp16", 0, 2e-2) == [] and check("int8", 0, 0.1) == []  # their probabilities move by design


def test_a_difference_of_exactly_the_tolerance_passes():
    """25 images of 5,000 is 0.5 points, which floating point makes 0.5000000000000004."""
    from export.parity import judge

    labels = np.zeros(5000, dtype=int)
    for name, entry in PRECISIONS.items():
        images = round(entry.tolerance_points * 50)  # the tolerance in images of 5,000
        probs = np.tile([0.9, 0.1], (5000, 1))
        probs[:images] = [0.1, 0.9]
        right = float((probs.argmax(1) == labels).mean())
        assert right == (5000 - images) / 5000
        assert not any("accuracy differs" in f for f in judge(name, None, probs, labels, 1.0, 1.0, 1.0).failures)
        probs[images] = [0.1, 0.9]  # one image more
        assert any("accuracy differs" in f for f in judge(name, None, probs, labels, 1.0, 1.0, 1.0).failures)


def test_card_table_prints_each_models_measured_figures(tiny_models_dir, capsys):
    manifest = load_manifest(tiny_models_dir, verify=False)
    assert export_main(["card", "tiny", "tiny-int8", "--models-dir", str(tiny_models_dir)]) == 0
    table = capsys.readouterr().out.strip().splitlines()
    assert table[0] == "| | `tiny` | `tiny-int8` |" and all(line.count("|") == 4 for line in table)
    rows = {line.split(" | ")[0].lstrip("| "): line.split(" | ")[1:] for line in table[2:]}
    for column, name in enumerate(["tiny", "tiny-int8"]):
        entry = manifest.get(name)
        assert rows["precision"][column].rstrip(" |") == entry.precision
        assert rows["validation top-1"][column].rstrip(" |") == f"{100 * entry.metrics['val_top1']:.2f}%"
        size = (tiny_models_dir / entry.file).stat().st_size / 2**20
        assert rows["file size"][column].rstrip(" |") == f"{size:.1f} MiB"
    assert export_main(["card", "nope", "--models-dir", str(tiny_models_dir)]) == 2
    assert "unknown model 'nope'" in capsys.readouterr().err


def test_card_table_shows_a_figure_edited_by_hand_as_such(tiny_models_dir, tmp_path, capsys):
    """A calibration record without its "before" used to lose the whole table to "error: before"."""
    copy = tmp_path / "models"
    shutil.copytree(tiny_models_dir, copy)
    raw = json.loads((copy / "manifest.json").read_text())
    del raw["models"][0]["metrics"]["calibration"]["before"]
    (copy / "manifest.json").write_text(json.dumps(raw))
    assert export_main(["card", "tiny", "--models-dir", str(copy)]) == 0
    rows = {line.split(" | ")[0].lstrip("| "): line for line in capsys.readouterr().out.splitlines()}
    assert "n/a (not as export writes it)" in rows["ECE before -> after"] and "MiB" in rows["file size"]


def test_card_table_is_refused_for_a_file_the_figures_were_not_measured_on(tiny_models_dir, tmp_path, capsys):
    copy = tmp_path / "models"
    shutil.copytree(tiny_models_dir, copy)
    file = copy / load_manifest(copy, verify=False).get("tiny-int8").file
    file.write_bytes(file.read_bytes()[:1000])  # a copy cut short
    assert export_main(["card", "tiny", "tiny-int8", "--models-dir", str(copy)]) == 2
    captured = capsys.readouterr()
    assert "model 'tiny-int8'" in captured.err and "sha256" in captured.err and not captured.out
    file.unlink()
    assert export_main(["card", "tiny-int8", "--models-dir", str(copy)]) == 2
    assert f"file {file} is missing" in capsys.readouterr().err


@pytest.fixture
def counted_torch_passes(monkeypatch) -> list[str]:
    """Each PyTorch reference pass that export and verify run, recorded as it happens."""
    import export.pipeline as pipeline
    import export.verify

    calls: list[str] = []
    real = pipeline.torch_logits

    def counted(model, images, *args, **kwargs):
        calls.append(type(model).__name__)
        return real(model, images, *args, **kwargs)

    monkeypatch.setattr(pipeline, "torch_logits", counted)
    monkeypatch.setattr(export.verify, "torch_logits", counted)
    return calls


def test_the_exports_and_checks_of_one_checkpoint_share_one_pytorch_pass(tiny_run, tmp_path, counted_torch_passes):
    ref = tmp_path / "ref"
    fp32, p32 = export_checkpoint(tiny_run / "best.pt", "t32", "fp32", tmp_path, cache_dir=None, reference_cache=ref)
    int8, p8 = export_checkpoint(tiny_run / "best.pt", "t8", "int8", tmp_path, cache_dir=None, reference_cache=ref)
    assert len(counted_torch_passes) == 1 and len(list(ref.glob("*.npz"))) == 1
    # the same reference: the same temperature fitted, the same PyTorch accuracy judged against
    assert int8.calibration.temperature == fp32.calibration.temperature and p8.torch_top1 == p32.torch_top1

    # another TTA is another reference
    export_checkpoint(tiny_run / "best.pt", "tf", "fp32", tmp_path, cache_dir=None, tta="flip", reference_cache=ref)
    assert len(counted_torch_passes) == 2 and len(list(ref.glob("*.npz"))) == 2

    kept, _ = verify_model("t32", tmp_path, cache_dir=None, reference_cache=ref)
    assert len(counted_torch_passes) == 2  # verified against the kept logits
    fresh, _ = verify_model("t32", tmp_path, cache_dir=None)
    assert len(counted_torch_passes) == 3
    assert kept.passed and kept.top1_agreement == 1.0 and kept.max_abs_prob_diff < 1e-4
    assert kept.torch_top1 == fresh.torch_top1 and kept.onnx_top1 == fresh.onnx_top1
    assert kept.max_abs_prob_diff == pytest.approx(fresh.max_abs_prob_diff, abs=1e-6)


def test_a_damaged_or_foreign_reference_entry_is_recomputed(tiny_run, tmp_path, counted_torch_passes):
    ref = tmp_path / "ref"
    first, _ = export_checkpoint(tiny_run / "best.pt", "a", "fp32", tmp_path, cache_dir=None, reference_cache=ref)
    (entry,) = ref.glob("*.npz")
    entry.write_bytes(b"not an npz")
    second, _ = export_checkpoint(tiny_run / "best.pt", "b", "fp32", tmp_path, cache_dir=None, reference_cache=ref)
    assert len(counted_torch_passes) == 2 and second.calibration.temperature == first.calibration.temperature

    # an entry whose stored key is not the one asked for (here: other logits renamed into place) is not read
    with np.load(entry) as data:
        stored = {k: data[k] for k in data.files}
    np.savez(entry, **{**stored, "key": str(stored["key"]).replace('"tta": "none"', '"tta": "flip"')})
    export_checkpoint(tiny_run / "best.pt", "c", "fp32", tmp_path, cache_dir=None, reference_cache=ref)
    assert len(counted_torch_passes) == 3


def test_verify_ignores_a_checkpoint_that_is_not_the_one_exported(tiny_run, tmp_path, counted_torch_passes):
    """A run folder trained again holds another checkpoint at the recorded path: comparing with it would report a
    parity failure that is not the file's, so verify falls back to the accuracy recorded at export."""
    ckpt = tmp_path / "run" / "best.pt"
    ckpt.parent.mkdir()
    shutil.copy(tiny_run / "best.pt", ckpt)
    models = tmp_path / "models"
    export_checkpoint(ckpt, "t", "fp32", models, cache_dir=None)
    assert len(counted_torch_passes) == 1

    state = torch.load(ckpt, weights_only=True)
    for tensor in state["model"].values():
        if tensor.is_floating_point():
            tensor.mul_(-1.0)
    torch.save(state, ckpt)
    parity, _ = verify_model("t", models, cache_dir=None)
    assert len(counted_torch_passes) == 1 and not parity.compared and parity.passed


@pytest.mark.parametrize("method", ["minmax", "percentile", "entropy"])
def test_each_int8_activation_range_reaches_the_quantiser_and_the_card(exported, tmp_path, monkeypatch, caplog, method):
    """--int8-ranges: the chosen method is what ONNX Runtime's calibrator runs with, the graph it makes still
    classifies like the FP32 one, and the card says which method and how many images were used."""
    import export.variants as variants
    from export.int8_ranges import ACTIVATION_RANGES
    from export.pipeline import convert_variant

    seen = {}
    real = variants.quantize_static

    def spy(*args, **kwargs):
        seen.update(method=kwargs["calibrate_method"], options=kwargs["extra_options"])
        return real(*args, **kwargs)

    monkeypatch.setattr(variants, "quantize_static", spy)
    monkeypatch.setattr(variants, "CALIBRATION_BATCH", 16)  # the toy training split has 45 images
    models, entry, _ = exported
    card = ModelCard(**{**entry.model_dump(include=set(ModelCard.model_fields)), "name": "q", "precision": "int8"})
    source = {**entry.source, "cache_dir": None}
    out = tmp_path / "q.onnx"
    # 40 images: the histogram methods need batches of one size, so they use 32 of them
    convert_variant(models / entry.file, out, card, source, 40, method)
    # The toy ResNet-9 has a BatchNormalization after a pooling: its 1-D scales are quantised per channel too.
    assert not [r for r in caplog.records if "out-of-range" in r.getMessage()]
    ranges = ACTIVATION_RANGES[method]
    assert seen["method"].name == ranges.ort_method
    assert all(seen["options"][k] == v for k, v in ranges.options.items())
    assert (
        card.source["calibration"]
        == f"{32 if ranges.equal_batches else 40} training-split images, {ranges.label}, per-channel weights, "
        "input layers in float"
    )
    proto = onnx.load(str(out))
    assert onnx.TensorProto.INT8 in {init.data_type for init in proto.graph.initializer}
    from export.sources import validation_split

    # in distribution: clipped ranges are fitted to such images
    x = to_model_input(validation_split(source, None, entry.classes).images)
    fp32 = OnnxClassifier(models / entry.file, device="cpu").logits(x)
    int8 = OnnxClassifier(out, device="cpu").logits(x)
    assert np.abs(int8 - fp32).max() < 0.25 * np.abs(fp32).max()


@pytest.mark.parametrize(
    ("method", "asked", "said"),
    [
        # 40 of the 45 training images drawn, 32 used in whole batches of 16: the split was said to hold 32
        ("percentile", 40, "Percentile 99.999 calibrates on whole batches of one size, so 32 of them calibrate q"),
        ("entropy", 100, "the training split holds 45 images and Entropy (KL) calibrates on whole batches"),
        ("minmax", 100, "the training split holds 45 images, so all of them calibrate q"),
    ],
)
def test_fewer_calibration_images_than_asked_are_said_for_the_right_reason(
    exported, tmp_path, monkeypatch, caplog, method, asked, said
):
    """`--int8-ranges percentile --calibration-images 70` on a training split of 800 images warned "the training
    split holds 50 images, so all of them calibrate": the histogram methods' whole batches had left 20 out."""
    import export.variants as variants
    from export.pipeline import convert_variant

    monkeypatch.setattr(variants, "CALIBRATION_BATCH", 16)  # the toy training split has 45 images
    models, entry, _ = exported
    card = ModelCard(**{**entry.model_dump(include=set(ModelCard.model_fields)), "name": "q", "precision": "int8"})
    with caplog.at_level("WARNING", logger="export"):
        convert_variant(
            models / entry.file, tmp_path / "q.onnx", card, {**entry.source, "cache_dir": None}, asked, method
        )
    warned = [r.getMessage() for r in caplog.records if r.getMessage().startswith("--calibration-images")]
    assert len(warned) == 1 and warned[0].startswith(f"--calibration-images {asked}: "), warned
    assert said in warned[0], warned
    assert "holds 32" not in warned[0], warned
    assert card.source["calibration"].startswith(f"{45 if method == 'minmax' else 32} training-split images")


def _weight_feeds(proto) -> dict[str, str]:
    """Each Conv/Gemm node's name -> the tensor its weight input comes from."""
    return {n.name: n.input[1] for n in proto.graph.node if n.op_type in ("Conv", "Gemm")}


def test_int8_keeps_the_layers_that_read_the_image_in_float_and_quantises_the_rest(exported, tmp_path, monkeypatch):
    import export.variants as variants
    from export.pipeline import convert_variant
    from export.variants import input_layers

    models, entry, _ = exported
    fp32 = onnx.load(str(models / entry.file))
    first = input_layers(fp32)
    # The toy ResNet-9's stem only: the normalisation before it has no weights, every later conv reads a conv.
    convs = [n.name for n in fp32.graph.node if n.op_type == "Conv"]
    assert first == convs[:1] and len(convs) > 1
    monkeypatch.setattr(variants, "CALIBRATION_BATCH", 16)
    card = ModelCard(**{**entry.model_dump(include=set(ModelCard.model_fields)), "name": "q", "precision": "int8"})
    out = tmp_path / "q.onnx"
    convert_variant(models / entry.file, out, card, {**entry.source, "cache_dir": None}, 32)
    proto = onnx.load(str(out))
    dequantized = {n.output[0] for n in proto.graph.node if n.op_type == "DequantizeLinear"}
    initializers = {i.name: i for i in proto.graph.initializer}
    feeds = _weight_feeds(proto)
    stem = [name for name in feeds if name.startswith(first[0])]
    assert stem and all(feeds[n] in initializers and feeds[n] not in dequantized for n in stem)
    assert initializers[feeds[stem[0]]].data_type == onnx.TensorProto.FLOAT
    quantized = [n for n, w in feeds.items() if w in dequantized]
    assert len(quantized) >= len(convs) - 1  # every other conv (and the head) takes int8 weights


def test_input_layers_reach_through_weight_free_ops_to_each_branch():
    """Two branches of one input (an ensemble's members, TTA's views): each branch's first weighted op is an
    input layer, found through Mul/Flip-like ops; a conv fed by a conv is not."""
    from onnx import TensorProto, helper

    from export.variants import input_layers

    w = helper.make_tensor("w", TensorProto.FLOAT, [4, 3, 3, 3], [0.0] * 108)
    w2 = helper.make_tensor("w2", TensorProto.FLOAT, [4, 4, 3, 3], [0.0] * 144)
    s = helper.make_tensor("s", TensorProto.FLOAT, [1], [2.0])
    nodes = [
        helper.make_node("Mul", ["x", "s"], ["xs"], name="normalise"),
        helper.make_node("Conv", ["xs", "w"], ["a"], name="stem_a", pads=[1, 1, 1, 1]),
        helper.make_node("Conv", ["a", "w2"], ["a2"], name="body_a", pads=[1, 1, 1, 1]),
        helper.make_node("Neg", ["xs"], ["xn"], name="view"),
        helper.make_node("Conv", ["xn", "w"], ["b"], name="stem_b", pads=[1, 1, 1, 1]),
        helper.make_node("Add", ["a2", "b"], ["y"], name="join"),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8, 8])],
        [w, w2, s],
    )
    assert input_layers(helper.make_model(graph)) == ["stem_a", "stem_b"]


def test_a_validation_subset_is_drawn_from_every_class_not_the_first_ones(image_folder):
    """A folder dataset's split is sorted by class: its first 5 of 15 images would be one class."""
    from export.sources import validation_split

    source = {"dataset": "folder", "data_root": str(image_folder), "val_size": 15, "split_seed": 42}
    source.update(input_size=32, fit="squash", cache_dir=None)
    classes = ["alpha", "beta", "gamma"]
    assert len(set(validation_split(source, None, classes).labels[:5])) == 1
    subset = validation_split(source, 5, classes)
    assert len(subset) == 5 and len(set(subset.labels)) > 1
    assert np.array_equal(subset.images, validation_split(source, 5, classes).images)  # the same images every time


def test_data_whose_classes_are_not_the_models_is_refused_before_any_figure_is_measured(
    tiny_run, exported, tmp_path, capsys
):
    """--data naming a folder of other classes used to end in an IndexError traceback (more classes) or to
    ship a temperature and accuracy measured on wrong labels (as many classes, other names)."""
    import shutil

    from PIL import Image

    models, entry, _ = exported
    m = _copy_models(models, tmp_path / "m")
    before = {p.name: p.read_bytes() for p in m.iterdir()}
    renamed, more = tmp_path / "renamed", tmp_path / "more"
    shutil.copytree(entry.source["data_root"], renamed)
    (renamed / "gamma").rename(renamed / "delta")
    shutil.copytree(entry.source["data_root"], more)
    (more / "delta").mkdir()
    for i in range(5):
        Image.new("RGB", (32, 32), (i, 0, 0)).save(more / "delta" / f"{i}.png")
    for data, shown in ((renamed, "alpha, beta, delta"), (more, "alpha, beta, delta, gamma")):
        argv = ["--checkpoint", str(tiny_run / "best.pt"), "--name", entry.name, "--models-dir", str(m), "--replace"]
        assert export_main([*argv, "--data", str(data), "--no-reference-cache", "--cache-dir", str(tmp_path)]) == 2
        err = capsys.readouterr().err
        assert f"--data {data} holds the classes {shown}, not the model's (alpha, beta, gamma)" in err, err
        assert export_main(["verify", entry.name, "--models-dir", str(m), "--data", str(data)]) == 2
        assert "not the dataset it was trained on" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in m.iterdir()} == before


def test_int8_ranges_are_refused_for_other_precisions_before_any_work(tiny_run, tmp_path, capsys):
    argv = ["--checkpoint", str(tiny_run / "best.pt"), "--name", "x", "--models-dir", str(tmp_path)]
    assert export_main([*argv, "--precision", "fp16", "--int8-ranges", "entropy"]) == 2
    assert "--int8-ranges applies to INT8 only, not fp16" in capsys.readouterr().err
    assert not (tmp_path / "manifest.json").exists()
    assert export_main([*argv, "--calibration-images", "64"]) == 2  # FP32 would have ignored it
    assert "--calibration-images applies to INT8 only, not fp32" in capsys.readouterr().err
    assert not (tmp_path / "manifest.json").exists()
    with pytest.raises(SystemExit) as refused:
        export_main([*argv, "--precision", "int8", "--int8-ranges", "p99"])
    assert refused.value.code == 2 and "argument --int8-ranges: invalid choice: 'p99'" in capsys.readouterr().err


def test_a_run_whose_dataset_moved_is_exported_from_where_it_is_now_and_other_images_are_said(
    tiny_run, image_folder, tmp_path, capsys, caplog
):
    import logging

    from PIL import Image

    moved = tmp_path / "moved"
    shutil.copytree(image_folder, moved)
    models = tmp_path / "models"
    argv = ["--checkpoint", str(tiny_run), "--name", "m", "--models-dir", str(models), "--cache-dir", ""]
    assert export_main([*argv, "--data", str(moved)]) == 0
    entry = load_manifest(models).get("m")
    assert entry.source["data_root"] == str(moved) and len(entry.source["val_fingerprint"]) == 64
    assert export_main(["verify", "m", "--models-dir", str(models), "--cache-dir", "", "--data", str(moved)]) == 0
    capsys.readouterr()
    other = tmp_path / "other"  # the same names, one picture changed: not the images the run was measured on
    shutil.copytree(image_folder, other)
    for path in sorted(other.rglob("*.png")):
        Image.new("RGB", (32, 32), (255, 0, 0)).save(path)
    assert "does not give the validation images" not in caplog.text
    with caplog.at_level(logging.WARNING):
        export_main([*argv, "--name", "m2", "--data", str(other)])  # parity judges the graph on them either way
    assert f"--data {other} does not give the validation images the run was measured on" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        export_main(["verify", "m", "--models-dir", str(models), "--cache-dir", "", "--data", str(other)])
    assert "does not give the validation images" in caplog.text
    small = tmp_path / "small"  # fewer images than the run held out: not its dataset, said as such
    for folder in ("alpha", "beta"):
        shutil.copytree(image_folder / folder, small / folder, ignore=lambda d, names: sorted(names)[3:])
    assert export_main([*argv, "--name", "m3", "--data", str(small)]) == 2
    assert "holds 6 images, fewer than the run held out for validation (15): not the run's dataset" in (
        capsys.readouterr().err
    )


def test_rederive_and_recover_read_a_dataset_that_moved_after_the_export_from_data(
    tiny_run, image_folder, tmp_path, capsys
):
    """The card names the folder the model was exported from; once the dataset has moved, --data says where it
    is now, as for export and verify, and a recovered checkpoint records the new place for later commands."""
    before, now = tmp_path / "before", tmp_path / "now"
    shutil.copytree(image_folder, before)
    models = tmp_path / "models"
    argv = ["--models-dir", str(models), "--cache-dir", ""]
    assert export_main(["--checkpoint", str(tiny_run), "--name", "m", "--data", str(before), *argv]) == 0
    before.rename(now)
    capsys.readouterr()
    out = tmp_path / "recovered.pt"
    assert export_main(["recover", "m", "--out", str(out), *argv]) == 2  # the card's folder is gone
    assert str(before) in capsys.readouterr().err and not out.exists()
    assert export_main(["recover", "m", "--out", str(out), *argv, "--data", str(now)]) == 0
    assert load_checkpoint(out)["meta"]["data_root"] == str(now)
    assert export_main(["rederive", "m", "--name", "m-int8", "--precision", "int8", "--calibrate", "none", *argv]) == 2
    assert str(before) in capsys.readouterr().err
    assert (
        export_main(
            [
                "rederive",
                "m",
                "--name",
                "m-int8",
                "--precision",
                "int8",
                "--calibrate",
                "none",
                *argv,
                "--data",
                str(now),
            ]
        )
        == 0
    )
    assert load_manifest(models).get("m-int8").source["derived_from"]["name"] == "m"


def test_a_bad_name_or_models_folder_is_refused_before_the_validation_pass(tiny_run, tmp_path, capsys, monkeypatch):
    """A name the manifest cannot take, a --models-dir that is a file or cannot be made: one line, exit 2, and
    nothing read past the checkpoint (the PyTorch pass over the validation split never starts)."""
    import export.pipeline

    def never(*args, **kwargs):
        raise AssertionError("the validation split was read")

    monkeypatch.setattr(export.pipeline, "validation_split", never)
    a_file = tmp_path / "a-file"
    a_file.write_text("not a folder")
    argv = ["--checkpoint", str(tiny_run / "best.pt")]
    with pytest.raises(SystemExit) as refused:
        export_main([*argv, "--name", "bad name!", "--models-dir", str(tmp_path / "m")])
    err = capsys.readouterr().err
    assert refused.value.code == 2 and "argument --name: 'bad name!' is not a model name: 1 to 64 letters" in err
    assert not (tmp_path / "m").exists()
    cases = {
        str(a_file): f"--models-dir {a_file} is not a folder",
        str(a_file / "sub"): f"--models-dir {a_file / 'sub'} is not a folder",
    }
    for models_dir, message in cases.items():
        assert export_main([*argv, "--name", "x", "--models-dir", models_dir]) == 2, models_dir
        err = capsys.readouterr().err
        assert f"error: {message}" in err and "Traceback" not in err, err


def test_a_name_listed_for_another_kind_of_model_is_not_replaced(exported, tiny_run, tmp_path, capsys, monkeypatch):
    """The manifest keeps one entry per name: exporting or re-deriving under the name of a listed model of
    another precision, network or classes would drop it. Refused in one line, before the validation pass, with
    the manifest and files untouched; the same kind of model under its own name is still re-exported."""
    import shutil

    import export.pipeline
    import export.rederive

    models = tmp_path / "models"
    shutil.copytree(exported[0], models)
    before = {p.name: p.read_bytes() for p in models.iterdir()}

    def never(*args, **kwargs):
        raise AssertionError("the validation split was read")

    monkeypatch.setattr(export.pipeline, "validation_split", never)
    monkeypatch.setattr(export.rederive, "validation_split", never)
    refused = {
        "export": ["--checkpoint", str(tiny_run / "best.pt"), "--name", "tiny", "--precision", "int8"],
        "rederive": ["rederive", "tiny", "--name", "tiny", "--precision", "fp16", "--calibrate", "none"],
    }
    for how, argv in refused.items():
        assert export_main([*argv, "--models-dir", str(models)]) == 2, how
        err = capsys.readouterr().err
        assert "'tiny' is already in" in err and "as an fp32 resnet9 of 3 classes" in err, err
        assert "give it another --name" in err and "Traceback" not in err, err
    assert {p.name: p.read_bytes() for p in models.iterdir()} == before
    monkeypatch.undo()
    entry, _ = export_checkpoint(tiny_run / "best.pt", "tiny", "fp32", models, cache_dir=None, replace=True)
    assert [m.name for m in load_manifest(models).models] == ["tiny"] and entry.precision == "fp32"


def test_a_damaged_or_foreign_checkpoint_file_is_refused_in_one_line(tmp_path, capsys):
    """A copy cut short, a text file, a bare tensor: each is named as no checkpoint, never a traceback."""
    whole = tmp_path / "whole.pt"
    torch.save({"meta": {}, "model": {"w": torch.zeros(4096)}}, whole)
    files = {"truncated.pt": whole.read_bytes()[:-10], "notes.pt": b"hello\n"}
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    torch.save(torch.zeros(3), tmp_path / "tensor.pt")
    for name in (*files, "tensor.pt"):
        argv = ["--checkpoint", str(tmp_path / name), "--name", "x", "--models-dir", str(tmp_path / "m")]
        assert export_main(argv) == 2, name
        err = capsys.readouterr().err
        assert f"{tmp_path / name} is not a training checkpoint" in err and "Traceback" not in err, err
    assert not (tmp_path / "m").exists()  # a refused export leaves no folder behind


def test_an_unreadable_checkpoint_is_named_as_unreadable_not_as_no_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "best.pt"
    torch.save({"meta": {}, "model": {}}, path)

    def denied(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(torch, "load", denied)  # as root, chmod would not stop the read
    with pytest.raises(ValueError, match=r"cannot read .*best.pt: Permission denied"):
        load_checkpoint(path)


def test_the_manifest_is_synced_and_renamed_into_place(exported, tmp_path, atomic_writes):
    """The service reads manifest.json at start: a crash while an export records a model must leave the old one."""
    from inference.manifest import manifest_update, save_manifest

    models, _, _ = exported
    synced, replaced = atomic_writes
    with manifest_update(tmp_path):
        path = save_manifest(load_manifest(models), tmp_path)
    with pytest.raises(RuntimeError, match="saved outside manifest_update"):  # a command that would lose updates
        save_manifest(load_manifest(models), tmp_path)
    assert replaced["manifest.json"] in synced and [p.name for p in tmp_path.iterdir()] == ["manifest.json"]
    assert [m["name"] for m in json.loads(path.read_text())["models"]] == ["tiny"]


def test_two_commands_recording_models_at_once_keep_both_and_readers_do_not_wait(exported, tmp_path, monkeypatch):
    """Two exports into one models folder at once (two terminals) each read the manifest, added their model and
    wrote it back: the later write dropped the earlier one's entry. The updates take turns now; the manifest's
    readers (the service, `export list`) take no part in that, so a read-only folder serves as before."""
    import threading
    import time

    import export.record
    from export.record import record_entry

    models, entry, _ = exported
    m = _copy_models(models, tmp_path / "m")
    load, reading, read = export.record.load_manifest, threading.Event(), threading.Event()

    def slow_load(models_dir, verify=True):
        manifest = load(models_dir, verify)
        reading.set()
        read.wait(30)  # the test reads the manifest meanwhile: a reader that waited for this update would wait 30 s
        time.sleep(1.0)  # the moment in which the other command would read the same manifest
        return manifest

    monkeypatch.setattr(export.record, "load_manifest", slow_load)
    errors: list[BaseException] = []

    def record(name: str) -> None:
        graph = tmp_path / f"{name}.onnx"
        shutil.copy(m / entry.file, graph)
        card = ModelCard(**{**entry.model_dump(include=set(ModelCard.model_fields)), "name": name})
        try:
            record_entry(card, graph, m / f"{name}.onnx", m, make_default=False, replaces=None)
        except BaseException as exc:  # said by the assertion below, not lost in the thread
            errors.append(exc)

    threads = [threading.Thread(target=record, args=(name,)) for name in ("a", "b")]
    for thread in threads:
        thread.start()
    assert reading.wait(30)
    started = time.monotonic()
    assert [x.name for x in load_manifest(m, verify=False).models] == ["tiny"]  # read while one update is under way
    assert time.monotonic() - started < 10
    read.set()
    for thread in threads:
        thread.join(60)
    assert not errors, errors
    listed = load_manifest(m)  # every listed file matches its sha256
    assert sorted(x.name for x in listed.models) == ["a", "b", "tiny"]
    assert sorted(p.name for p in m.iterdir()) == sorted(["a.onnx", "b.onnx", *(p.name for p in models.iterdir())])


def test_an_export_does_not_replace_a_model_another_listed_under_its_name_while_it_ran(
    exported, tiny_run, tmp_path, monkeypatch
):
    """The name is checked before the minutes of conversion and measurement; two exports of one new name (two
    terminals, a retried job) both passed that check and the later silently replaced the earlier. The name is
    checked again under the manifest's lock: the later export is refused, naming what happened."""
    import export.pipeline
    from export.record import record_entry

    models, entry, _ = exported
    m = _copy_models(models, tmp_path / "m")
    record = export.pipeline.record_entry

    card = ModelCard(**{**entry.model_dump(include=set(ModelCard.model_fields)), "name": "new"})

    def the_other_records_first(*args, **kwargs):
        other = tmp_path / "other.onnx"
        shutil.copy(m / entry.file, other)
        record(card, other, m / "new.onnx", m, False, replaces=None)  # the other terminal's export of the name
        return record(*args, **kwargs)

    monkeypatch.setattr(export.pipeline, "record_entry", the_other_records_first)
    with pytest.raises(UsageError, match="'new' was listed in .* by another command while this export ran"):
        export_checkpoint(tiny_run / "best.pt", "new", "int8", m, cache_dir=None, max_val_images=64)
    listed = {x.name: x for x in load_manifest(m).models}  # the files still match their sha256
    assert listed["new"].precision == "fp32" and listed["new"].sha256 == entry.sha256
    assert not [p for p in m.iterdir() if p.name.startswith("tmp")]  # the discarded graph's folder is gone

    # the same under a listed name: replaced or removed meanwhile
    graph = tmp_path / "g.onnx"
    shutil.copy(m / entry.file, graph)
    with pytest.raises(UsageError, match="'new' was replaced in"):
        record_entry(card, graph, m / "new.onnx", m, False, replaces="0" * 64)
    assert export_main(["remove", "new", "--models-dir", str(m)]) == 0
    with pytest.raises(UsageError, match="'new' was removed in"):
        record_entry(card, graph, m / "new.onnx", m, False, replaces=entry.sha256)
    assert "new" not in {x.name for x in load_manifest(m).models} and graph.is_file()
    record_entry(card, graph, m / "new.onnx", m, False, replaces=None)
    assert load_manifest(m).models[-1].name == "new"


@pytest.mark.parametrize("tta", ["none", "flip"])
def test_recover_rebuilds_the_checkpoint_a_graph_was_exported_from(tiny_run, tmp_path, capsys, tta):
    """The exporter keeps the state dict's names on the initializers, so the weights come back exactly; the
    recovered checkpoint then serves as the original does (here: its EMA weights, with the card's data)."""
    models = tmp_path / "models"
    entry, _ = export_checkpoint(tiny_run / "best.pt", "tiny", "fp32", models, cache_dir=None, tta=tta)
    out = tmp_path / "recovered.pt"
    args = ["recover", "tiny", "--out", str(out), "--models-dir", str(models), "--cache-dir", str(tmp_path / "c")]
    assert export_main(args) == 0
    assert "top-1 agreement 100.00%" in capsys.readouterr().out
    original, recovered = load_checkpoint(tiny_run / "best.pt"), load_checkpoint(out)
    served, rebuilt = model_from_checkpoint(original), model_from_checkpoint(recovered)
    # The exporter's optimiser folds some BatchNorms into their convolutions: those come back as the same function.
    x = torch.rand(4, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(served(x), rebuilt(x), atol=1e-5)
    weights = rebuilt.state_dict()
    kept = [k for k, v in served.state_dict().items() if torch.equal(v, weights[k])]
    assert "backbone.fc.weight" in kept and "normalize.mean" in kept
    meta = recovered["meta"]
    same = ("arch", "model_args", "classes", "mean", "std", "input_size", "fit", "dataset", "val_size", "split_seed")
    assert {k: meta[k] for k in same} == {k: original["meta"][k] for k in same}
    assert meta["recovered_from"]["sha256"] == entry.sha256


def test_recover_refuses_rounded_weights_and_graphs_of_another_network(tiny_run, tmp_path, capsys):
    models = tmp_path / "models"
    export_checkpoint(tiny_run / "best.pt", "tiny-int8", "int8", models, cache_dir=None)
    assert export_main(["recover", "tiny-int8", "--out", str(tmp_path / "x.pt"), "--models-dir", str(models)]) == 2
    assert "rounded" in capsys.readouterr().err
    export_checkpoint(tiny_run / "best.pt", "tiny", "fp32", models, cache_dir=None)
    manifest = json.loads((models / "manifest.json").read_text())
    for m in manifest["models"]:
        if m["name"] == "tiny":
            m["source"]["model_args"] = {"width": 16}  # a card that names another network than the graph holds
    (models / "manifest.json").write_text(json.dumps(manifest))
    assert export_main(["recover", "tiny", "--out", str(tmp_path / "x.pt"), "--models-dir", str(models)]) == 2
    assert "in the graph" in capsys.readouterr().err and not (tmp_path / "x.pt").exists()


@pytest.mark.parametrize("command", [["--checkpoint", "x.pt"], ["rederive", "x"]])
def test_default_everywhere_and_default_on_some_hosts_are_not_given_together(command, capsys):
    with pytest.raises(SystemExit) as refused:
        export_main([*command, "--name", "y", "--precision", "int8", "--default", "--default-for", "cpu"])
    assert refused.value.code == 2
    assert "argument --default-for: not allowed with argument --default" in capsys.readouterr().err


def test_recover_writes_only_a_new_checkpoint_file(tiny_run, tmp_path, capsys):
    """Not into a folder, not under a file, never over a run's best.pt or last.pt: refused before any work."""
    models = tmp_path / "models"
    export_checkpoint(tiny_run / "best.pt", "tiny", "fp32", models, cache_dir=None)
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    (tmp_path / "afile").write_text("")
    before = (run / "best.pt").read_bytes()
    capsys.readouterr()
    for out, said in (
        (tmp_path, "is a folder: name the checkpoint file to write"),
        (tmp_path / "afile" / "x.pt", f"{tmp_path / 'afile'} is a file, not a folder"),
        (run / "best.pt", f"would replace the best.pt of the run in {run}"),
        (run / "config.yaml", "is not a checkpoint's name: end it in .pt"),  # these were replaced
        (models / "manifest.json", "is not a checkpoint's name: end it in .pt"),
        (models / "tiny.onnx", "is not a checkpoint's name: end it in .pt"),
        (models / "tiny.pt", "is in a models folder (beside its manifest.json)"),
    ):
        assert export_main(["recover", "tiny", "--out", str(out), "--models-dir", str(models)]) == 2
        err = capsys.readouterr().err
        assert said in err and len(err.strip().splitlines()) == 1, err
    assert (run / "best.pt").read_bytes() == before
    assert sorted(p.name for p in models.iterdir()) == ["manifest.json", "tiny.onnx"]
    assert (
        export_main(["verify", "tiny", "--models-dir", str(models)]) == 0
    )  # the graph and manifest are still the shipped ones


NO_TORCH = (
    "import sys, importlib.abc\n"
    "class Blocked(importlib.abc.MetaPathFinder):\n"
    "    def find_spec(self, name, path, target=None):\n"
    "        if name.split('.')[0] in ('torch', 'torchvision', 'onnx'):\n"
    "            raise ModuleNotFoundError('not on the serving install: ' + name, name=name)\n"
    "sys.meta_path.insert(0, Blocked())\n"
    "from export.__main__ import main\n"
    "sys.exit(main(sys.argv[1:]))\n"
)


def test_a_default_on_hosts_its_precision_does_not_suit_is_warned_about(tiny_run, tiny_models_dir, tmp_path, caplog):
    """`default tiny-int8` (every kind of host) made an INT8 graph the GPU hosts' default, and `export --default`
    an INT8 or FP16 one, without a word: it runs there, slowly. Warned, not refused; a suited default says nothing."""
    from export.__main__ import main
    from export.pipeline import export_checkpoint

    models = tmp_path / "models"
    shutil.copytree(tiny_models_dir, models)
    with caplog.at_level(logging.WARNING, logger="export"):
        assert main(["default", "tiny-int8", "--models-dir", str(models)]) == 0
    assert "tiny-int8 is now the default on GPU hosts, but INT8 is meant for CPUs" in caplog.text
    assert "export default NAME --for cuda" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="export"):
        assert main(["default", "tiny-int8", "--for", "cpu", "--models-dir", str(models)]) == 0
        assert main(["default", "tiny", "--models-dir", str(models)]) == 0  # FP32 suits both kinds
    assert "is now the default" not in caplog.text
    with caplog.at_level(logging.WARNING, logger="export"):
        export_checkpoint(tiny_run / "best.pt", "tiny-fp16", "fp16", models, cache_dir=None, default_for=["cpu"])
    assert "tiny-fp16 is now the default on CPU hosts, but FP16 is meant for GPUs" in caplog.text
    assert load_manifest(models).defaults["cpu"] == "tiny-fp16"


def test_the_manifests_own_commands_run_on_the_serving_install_without_torch(tiny_models_dir, tmp_path):
    """docs/deploy.md lists the models with `python -m export list` on `scripts/setup.sh serve`, which has no
    torch: list, default and card must not import it (the conversions may)."""
    import subprocess
    import sys

    from conftest import ROOT

    models = tmp_path / "models"
    shutil.copytree(tiny_models_dir, models)
    run = dict(cwd=ROOT, capture_output=True, text=True, timeout=120)
    for argv in (["list"], ["default", "tiny-int8", "--for", "cpu"], ["card", "tiny"]):
        done = subprocess.run([sys.executable, "-c", NO_TORCH, *argv, "--models-dir", str(models)], **run)
        assert done.returncode == 0 and "Traceback" not in done.stderr, (argv, done.stderr[-1500:])
    assert load_manifest(models).defaults["cpu"] == "tiny-int8"
    done = subprocess.run([sys.executable, "-c", NO_TORCH, "verify", "tiny", "--models-dir", str(models)], **run)
    assert done.returncode == 2 and "Traceback" not in done.stderr  # refused in one line, naming what is missing
    assert "needs onnx, which this install lacks (not on the serving install: onnx)" in done.stderr


def test_a_name_that_differs_from_a_listed_one_only_in_case_is_refused(exported, tiny_run, tmp_path, capsys):
    """On a case-insensitive file system (macOS, Windows) TINY.onnx is tiny.onnx: the export would replace the
    listed model's file under it and leave that entry's sha256 wrong. Refused before any work, files untouched."""
    models = tmp_path / "models"
    shutil.copytree(exported[0], models)
    before = {p.name: p.read_bytes() for p in models.iterdir()}
    argv = ["--checkpoint", str(tiny_run / "best.pt"), "--name", "TINY", "--models-dir", str(models)]
    assert export_main(argv) == 2
    err = capsys.readouterr().err
    assert "differs from the listed 'tiny' only in case" in err and "Traceback" not in err, err
    assert {p.name: p.read_bytes() for p in models.iterdir()} == before


def test_a_graph_the_disk_cannot_hold_is_an_error_naming_the_file_and_the_models_folder_is_kept(
    exported, tiny_run, tmp_path, capsys
):
    """The writes of onnx and torch's exporter fail with an OSError naming no file ("error: File too large"):
    the user is told which file, and the models folder holds what it held."""
    import resource

    models, entry, _ = exported
    m = _copy_models(models, tmp_path / "m")
    before = {p.name: p.read_bytes() for p in m.iterdir()}
    argv = ["--checkpoint", str(tiny_run / "best.pt"), "--name", "other", "--models-dir", str(m)]
    argv += ["--cache-dir", str(tmp_path / "cache"), "--no-reference-cache", "--calibrate", "none"]
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, hard))  # a graph of the tiny network is 400 kB
    try:
        assert export_main(argv) == 2
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    said = capsys.readouterr().err.rsplit("\r", 1)[-1]  # after the progress bars
    assert said.startswith(f"error: {m}/") and said.endswith(".onnx: File too large\n"), said
    assert {p.name: p.read_bytes() for p in m.iterdir()} == before


def test_a_hand_edited_card_source_is_refused_in_one_line_naming_the_manifest(exported, tmp_path, capsys):
    """The manifest types a card's source as a free mapping: a key deleted or mistyped by hand used to end
    verify, rederive and recover in a KeyError or TypeError traceback (exit 1) halfway through."""
    models, entry, _ = exported
    m = _copy_models(models, tmp_path / "m")
    raw = json.loads((m / "manifest.json").read_text())
    edits = {
        "source.split_seed: Field required": lambda e: e["source"].pop("split_seed"),
        "source.val_size: Input should be a valid integer (got '15')": lambda e: e["source"].update(val_size="15"),
        "source.data_root: Input should be a valid string": lambda e: e["source"].update(data_root=None),
        "source.checkpoint: Input should be a valid string (got 5)": lambda e: e["source"].update(checkpoint=5),
    }
    commands = {
        "verify": ["verify", entry.name],
        "rederive": ["rederive", entry.name, "--name", "derived", "--calibrate", "none"],
        "recover": ["recover", entry.name, "--out", str(tmp_path / "recovered.pt")],
    }
    for problem, edit in edits.items():
        card = json.loads(json.dumps(raw))
        edit(card["models"][0])
        (m / "manifest.json").write_text(json.dumps(card))
        before = {p.name: p.read_bytes() for p in m.iterdir()}
        for command, argv in commands.items():
            assert export_main([*argv, "--models-dir", str(m)]) == 2, (command, problem)
            err = capsys.readouterr().err
            said = f"error: invalid manifest {m / 'manifest.json'}: model {entry.name!r}: {problem}"
            assert said in err and len(err.strip().splitlines()) == 1, (command, err)
            assert {p.name: p.read_bytes() for p in m.iterdir()} == before
        assert not (tmp_path / "recovered.pt").exists()


def test_verify_without_the_checkpoint_of_a_card_whose_parity_is_null_says_so(exported, tmp_path, capsys):
    """``metrics.parity: null`` used to end in "'NoneType' object has no attribute 'get'"."""
    models, entry, _ = exported
    m = _copy_models(models, tmp_path / "m")
    raw = json.loads((m / "manifest.json").read_text())
    raw["models"][0]["metrics"]["parity"] = None
    raw["models"][0]["source"]["checkpoint"] = str(tmp_path / "gone.pt")
    (m / "manifest.json").write_text(json.dumps(raw))
    assert export_main(["verify", "--models-dir", str(m), "--cache-dir", str(tmp_path / "cache")]) == 2
    assert f"error: {entry.name}: no checkpoint and no recorded PyTorch accuracy" in capsys.readouterr().err


@pytest.mark.parametrize("gone", [True, False], ids=["checkpoint-gone", "none-recorded"])
def test_verify_without_the_checkpoint_names_where_it_looked_for_it(exported, tmp_path, capsys, gone):
    """The refusal named no path: a checkpoint recorded at a path that is not there now (another folder, another
    machine) could not be told from a card that records none."""
    models, entry, _ = exported
    m = _copy_models(models, tmp_path / "m")
    raw = json.loads((m / "manifest.json").read_text())
    raw["models"][0]["metrics"]["parity"] = None
    if gone:
        raw["models"][0]["source"]["checkpoint"] = str(tmp_path / "gone" / "best.pt")
    else:
        raw["models"][0]["source"].pop("checkpoint")
    (m / "manifest.json").write_text(json.dumps(raw))
    assert export_main(["verify", "--models-dir", str(m), "--cache-dir", str(tmp_path / "cache")]) == 2
    err = capsys.readouterr().err
    looked = f"no usable checkpoint at {tmp_path / 'gone' / 'best.pt'}" if gone else "its card records no checkpoint"
    assert err.splitlines()[-1] == (  # after the dataset's decoding progress
        f"error: {entry.name}: no checkpoint and no recorded PyTorch accuracy on the same "
        f"{counted(entry.metrics['val_samples'], 'image')} ({looked})"
    ), err


@pytest.mark.parametrize("key", ["dataset", "data_root", "split_seed"])
def test_a_checkpoint_whose_meta_does_not_name_its_data_is_refused_in_one_line(tiny_run, tmp_path, capsys, key):
    """A checkpoint made by hand (torch.save of a meta and the weights) without the keys that say which images
    it was validated on used to end in a KeyError traceback."""
    ckpt = torch.load(tiny_run / "best.pt", weights_only=True)
    del ckpt["meta"][key]
    path = tmp_path / "hand-made.pt"
    torch.save(ckpt, path)
    argv = ["--checkpoint", str(path), "--name", "x", "--models-dir", str(tmp_path / "m"), "--no-reference-cache"]
    assert export_main(argv) == 2
    err = capsys.readouterr().err
    assert f"error: {path} does not say which data it was validated on: meta.{key}: Field required" in err, err


@pytest.mark.parametrize("failure", ["no validation split", "dataset moved", "parity", "ctrl-c", "through .."])
def test_an_export_refused_or_stopped_after_the_checks_leaves_no_new_models_folder(
    tiny_run, tmp_path, capsys, monkeypatch, failure
):
    """The models folder, and the parents it needed, are made for the export: one refused once they were made
    (the run held out no images, its dataset moved, the graph missed parity, a Ctrl-C) used to leave them
    behind, empty."""
    import export.pipeline

    ckpt = torch.load(tiny_run / "best.pt", weights_only=True)
    if failure == "no validation split":
        ckpt["meta"]["val_size"] = 0
    if failure in ("dataset moved", "through .."):
        ckpt["meta"]["data_root"] = str(tmp_path / "gone")
    if failure in ("parity", "ctrl-c"):

        def fails(*args, **kwargs):
            if failure == "ctrl-c":
                raise KeyboardInterrupt
            raise ParityError("tiny (fp32) failed verification")

        monkeypatch.setattr(export.pipeline, "publish", fails)
    path = tmp_path / "best.pt"
    torch.save(ckpt, path)
    # through ..: other/.. (this folder) cannot be taken away, and stopped other/ being taken away after it
    models = (tmp_path / "other" / ".." if failure == "through .." else tmp_path) / "new" / "models"
    argv = ["--checkpoint", str(path), "--name", "x", "--models-dir", str(models), "--calibrate", "none"]
    status = export_main([*argv, "--no-reference-cache", "--cache-dir", str(tmp_path / "cache")])
    assert status == {"parity": 1, "ctrl-c": 130}.get(failure, 2), capsys.readouterr().err
    assert not (tmp_path / "new").exists() and not (tmp_path / "other").exists()


def test_a_models_folder_that_cannot_be_locked_is_updated_with_a_warning(
    tiny_models_dir, tmp_path, monkeypatch, caplog
):
    """NFS takes no exclusive flock on a folder (EBADF): the manifest lock must not stop export, default and
    remove there; the update goes on unserialized, as before there was a lock, and says so."""
    import errno
    import fcntl

    from inference.manifest import load_manifest, set_default

    models = tmp_path / "m"
    shutil.copytree(tiny_models_dir, models)

    def no_folder_locks(fd, operation):
        raise OSError(errno.EBADF, "Bad file descriptor")

    monkeypatch.setattr(fcntl, "flock", no_folder_locks)
    other = next(m.name for m in load_manifest(models).models if m.name != load_manifest(models).default)
    with caplog.at_level(logging.WARNING, logger="inference.manifest"):
        set_default(models, other)
    assert load_manifest(models).default == other
    assert f"cannot lock {models} (Bad file descriptor)" in caplog.text, caplog.text


def test_the_card_names_the_checkpoint_the_graph_was_made_from_though_a_run_replaced_it_meanwhile(
    tiny_run, tmp_path, monkeypatch
):
    """A run still training renames a new best.pt over the file while an export reads the validation images: the
    card's checkpoint_sha256 (and the reference logits cached under it) must be those of the file it loaded,
    not of the one that took its place."""
    import hashlib

    import export.pipeline as pipeline
    from inference.manifest import sha256_file

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    loaded = sha256_file(run / "best.pt")
    newer = load_checkpoint(run / "best.pt")
    newer["meta"]["epochs_trained_note"] = "a later epoch"
    torch.save(newer, run / "newer.pt")
    real = pipeline.validation_split

    def a_new_best_arrives(*args, **kwargs):
        (run / "newer.pt").replace(run / "best.pt")
        return real(*args, **kwargs)

    monkeypatch.setattr(pipeline, "validation_split", a_new_best_arrives)
    entry, *_ = export_checkpoint(run / "best.pt", "tiny", "fp32", tmp_path / "models", cache_dir=None)
    assert hashlib.sha256((run / "best.pt").read_bytes()).hexdigest() != loaded
    assert entry.source["checkpoint_sha256"] == loaded


def test_more_calibration_images_than_the_training_split_holds_is_warned_naming_both(tiny_run, tmp_path, caplog):
    """The card records how many calibrated the graph; a user who asked for more is told, not left to find out."""
    with caplog.at_level(logging.WARNING, logger="export"):
        entry, *_ = export_checkpoint(
            tiny_run / "best.pt", "tiny-int8", "int8", tmp_path / "models", calibration_count=10_000, cache_dir=None
        )
    used = int(entry.source["calibration"].split()[0])
    assert used < 10_000
    assert f"--calibration-images 10000: the training split holds {used} images" in caplog.text


def test_verify_without_a_relative_checkpoint_names_both_places_it_looked(exported, tmp_path, capsys, monkeypatch):
    """A relative checkpoint is looked for from the current folder and from the project's (the models folder's
    parent): the refusal named the recorded path alone, which read as the current folder's only."""
    models, entry, _ = exported
    m = _copy_models(models, tmp_path / "project" / "m")
    raw = json.loads((m / "manifest.json").read_text())
    raw["models"][0]["metrics"]["parity"] = None
    raw["models"][0]["source"]["checkpoint"] = "runs/gone/best.pt"
    (m / "manifest.json").write_text(json.dumps(raw))
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    assert export_main(["verify", "--models-dir", str(m), "--cache-dir", str(tmp_path / "cache")]) == 2
    beside = (tmp_path / "project").resolve() / "runs" / "gone" / "best.pt"
    err = capsys.readouterr().err
    assert err.splitlines()[-1].endswith(f"(no usable checkpoint at runs/gone/best.pt nor at {beside})"), err


def test_verify_against_the_recorded_accuracy_of_a_card_without_a_checkpoint_says_so(exported, tmp_path, caplog):
    """Its warning named the path "-" that stands for none: "no usable checkpoint at -"."""
    models, entry, _ = exported
    m = _copy_models(models, tmp_path / "m")
    raw = json.loads((m / "manifest.json").read_text())
    raw["models"][0]["source"].pop("checkpoint")
    (m / "manifest.json").write_text(json.dumps(raw))
    with caplog.at_level(logging.WARNING):
        export_main(["verify", "--models-dir", str(m), "--cache-dir", str(tmp_path / "cache")])
    said = [r.getMessage() for r in caplog.records if "recorded at export" in r.getMessage()]
    assert said == [
        f"comparing {entry.name} with the PyTorch accuracy recorded at export: its card records no checkpoint"
    ]

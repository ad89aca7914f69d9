"""Ensembles: checkpoints joined into one network that averages their probabilities, then evaluated, exported
and verified as any checkpoint."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from export.pipeline import export_checkpoint
from export.verify import verify_model
from inference.errors import UsageError
from inference.runtime import OnnxClassifier
from training.__main__ import main as training_main
from training.checkpoint import load_checkpoint, model_from_checkpoint, save_checkpoint
from training.config import ConfigError
from training.config_recipes import build_config
from training.ensemble import join_checkpoints
from training.models import create_model
from training.models.ensemble import Ensemble


def _mean_probabilities(models, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return torch.stack([torch.softmax(m(x), dim=1) for m in models]).mean(0)


def test_the_ensemble_outputs_the_log_of_its_members_mean_probability():
    torch.manual_seed(0)
    members = [create_model("resnet9", 4, width=4).eval(), create_model("airbench94", 4, widths=(8, 8, 8)).eval()]
    x = torch.rand(5, 3, 32, 32)
    with torch.no_grad():
        out = Ensemble(members)(x)
    expected = _mean_probabilities(members, x)
    assert torch.allclose(torch.softmax(out, dim=1), expected, atol=1e-6)
    assert torch.allclose(out.exp().sum(1), torch.ones(5), atol=1e-5)  # log-probabilities, not raw scores
    with pytest.raises(ValueError, match="at least two"):
        Ensemble(members[:1])


@pytest.fixture(scope="module")
def other_member(tiny_run, tmp_path_factory):
    """A checkpoint of another architecture on the same data as the tiny run (random weights: an ensemble only
    needs members that agree on data and classes). Its logits are scaled up so that it decides, rather than
    leaving the ensemble near ties that INT8's rounding would flip."""
    ckpt = load_checkpoint(tiny_run / "best.pt")
    args = {"widths": [8, 8, 8], "logit_scale": 20.0}
    meta = dict(ckpt["meta"], arch="airbench94", model_args=args, recipe="other")
    torch.manual_seed(1)
    model = create_model(meta["arch"], meta["num_classes"], meta["mean"], meta["std"], **meta["model_args"])
    path = tmp_path_factory.mktemp("other") / "best.pt"
    save_checkpoint({"meta": meta, "model": model.state_dict(), "best": {"val_top1": 0.5}}, path)
    return path


@pytest.fixture(scope="module")
def ensemble_file(tiny_run, other_member, tmp_path_factory):
    out = tmp_path_factory.mktemp("ensemble") / "pair.pt"
    join_checkpoints([tiny_run, other_member], out)
    return out


def test_a_joined_checkpoint_rebuilds_into_the_members_average(tiny_run, other_member, ensemble_file):
    ckpt = load_checkpoint(ensemble_file)
    meta = ckpt["meta"]
    assert meta["arch"] == "ensemble" and [m["arch"] for m in meta["members"]] == ["resnet9", "airbench94"]
    assert meta["classes"] == load_checkpoint(tiny_run / "best.pt")["meta"]["classes"]
    assert meta["members"][1]["val_top1"] == 0.5 and len(meta["members"][0]["checkpoint_sha256"]) == 64
    # the members' common fingerprint of their images, which export and verify check a moved dataset against
    member_fingerprint = load_checkpoint(tiny_run / "best.pt")["meta"]["data_fingerprint"]
    assert meta["data_fingerprint"] == member_fingerprint and ":" in member_fingerprint
    # Each member served with the weights its own checkpoint serves (the tiny run's EMA).
    members = [model_from_checkpoint(load_checkpoint(p)) for p in (tiny_run / "best.pt", other_member)]
    x = torch.rand(6, 3, 32, 32)
    with torch.no_grad():
        joined = torch.softmax(model_from_checkpoint(ckpt)(x), dim=1)
    assert torch.allclose(joined, _mean_probabilities(members, x), atol=1e-6)


def test_members_that_held_out_nothing_record_no_validation_accuracy(tiny_run, other_member, tmp_path):
    """A run with val_size 0 ranks its epochs by training accuracy; joined, that is not shown as val top-1."""
    paths = []
    for path in (tiny_run / "best.pt", other_member):
        ckpt = load_checkpoint(path)
        all_data = tmp_path / f"{len(paths)}.pt"
        save_checkpoint(dict(ckpt, meta=dict(ckpt["meta"], val_size=0)), all_data)
        paths.append(all_data)
    meta = join_checkpoints(paths, tmp_path / "pair.pt")
    assert [m["val_top1"] for m in meta["members"]] == [None, None]
    assert join_checkpoints([tiny_run, other_member], tmp_path / "kept.pt")["members"][1]["val_top1"] == 0.5


def test_members_trained_on_other_data_are_refused(tiny_run, other_member, tmp_path):
    ckpt = load_checkpoint(other_member)
    elsewhere = str(tmp_path / "elsewhere")
    for key, changed, said in (
        ("classes", {"classes": ["x", "y", "z"]}, "classes"),
        ("split_seed", {"split_seed": 7}, "split_seed"),
        ("data_root", {"data_root": elsewhere, "data_fingerprint": "other images"}, "different data"),
    ):
        odd = tmp_path / f"{key}.pt"
        save_checkpoint(dict(ckpt, meta=dict(ckpt["meta"], **changed)), odd)
        with pytest.raises(ValueError, match=said):
            join_checkpoints([tiny_run, odd], tmp_path / "out.pt")
    # another root holding the same images (a run continued from a copy of its data): the same data
    moved = tmp_path / "moved.pt"
    save_checkpoint(dict(ckpt, meta=dict(ckpt["meta"], data_root=elsewhere)), moved)
    assert load_checkpoint(tiny_run)["meta"]["data_fingerprint"] == ckpt["meta"]["data_fingerprint"]
    join_checkpoints([tiny_run, moved], tmp_path / "moved-pair.pt")
    odd_fit = tmp_path / "fit.pt"
    save_checkpoint(
        dict(ckpt, meta=dict(ckpt["meta"], fit="pad" if ckpt["meta"]["fit"] != "pad" else "squash")), odd_fit
    )
    with pytest.raises(ValueError, match="--fit"):
        join_checkpoints([tiny_run, odd_fit], tmp_path / "out.pt")
    chosen = join_checkpoints([tiny_run, odd_fit], tmp_path / "fit-chosen.pt", fit="center_crop")
    # one member read its images with another fit: no fingerprint is the ensemble's, so none is recorded
    assert chosen["fit"] == "center_crop" and "data_fingerprint" not in chosen
    unprinted = tmp_path / "unprinted.pt"  # a member that recorded none (a recovered checkpoint)
    save_checkpoint(dict(ckpt, meta={k: v for k, v in ckpt["meta"].items() if k != "data_fingerprint"}), unprinted)
    assert "data_fingerprint" not in join_checkpoints([tiny_run, unprinted], tmp_path / "unprinted-pair.pt")
    with pytest.raises(ValueError, match="twice"):
        join_checkpoints([tiny_run, tiny_run / "best.pt"], tmp_path / "out.pt")
    with pytest.raises(ValueError, match="at least two"):
        join_checkpoints([tiny_run], tmp_path / "out.pt")
    with pytest.raises(FileNotFoundError, match="nothing.pt"):  # not "given twice"
        join_checkpoints([tiny_run, tmp_path / "nothing.pt"], tmp_path / "out.pt")
    assert not (tmp_path / "out.pt").exists()


def test_the_ensemble_reads_its_data_where_a_member_found_it_last(tiny_run, other_member, tmp_path):
    """Members of a run continued from a copy of its data: the first trained where the data was lost. The joined
    checkpoint named that root, so evaluate and export of it asked for --data."""
    ckpt = load_checkpoint(other_member)
    lost = tmp_path / "lost.pt"
    save_checkpoint(dict(ckpt, meta=dict(ckpt["meta"], data_root=str(tmp_path / "gone"))), lost)
    meta = join_checkpoints([lost, tiny_run], tmp_path / "pair.pt")
    assert meta["data_root"] == load_checkpoint(tiny_run)["meta"]["data_root"]
    assert meta["cache_dir"] == load_checkpoint(tiny_run)["config"]["data"]["cache_dir"]


def test_an_ensemble_is_not_a_member_and_not_trained(tiny_run, ensemble_file, tmp_path, capsys):
    assert training_main(["ensemble", str(ensemble_file), str(tiny_run), "--out", str(tmp_path / "e.pt")]) == 2
    assert "already an ensemble" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="not trained"):
        build_config("resnet9_half_cpu", ["model.name=ensemble"])


def test_the_command_joins_and_names_each_member(tiny_run, other_member, tmp_path, capsys):
    out = tmp_path / "e.pt"
    assert training_main(["ensemble", str(tiny_run), str(other_member), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "50.00% val top-1" in printed and str(out) in printed and out.is_file()


def test_an_ensemble_exports_verifies_and_evaluates(ensemble_file, tmp_path):
    models = tmp_path / "models"
    entry, parity = export_checkpoint(ensemble_file, "pair", "fp32", models, cache_dir=None, tta="flip")
    assert parity.passed and parity.max_abs_prob_diff < 1e-4
    assert [m["arch"] for m in entry.source["members"]] == ["resnet9", "airbench94"]
    # The graph holds both members: its probabilities are their flip-averaged mean (divided by the fitted T).
    model = model_from_checkpoint(load_checkpoint(ensemble_file))
    x = np.random.default_rng(0).random((4, 3, 32, 32), dtype=np.float32)
    with torch.no_grad():
        t = torch.from_numpy(x)
        logits = (model(t) + model(t.flip(3))) / 2 / entry.calibration.temperature
    onnx_logits = OnnxClassifier(models / entry.file, device="cpu").logits(x)
    np.testing.assert_allclose(onnx_logits, logits.numpy(), atol=1e-4)
    parity, _ = verify_model("pair", models, cache_dir=None)
    assert parity.passed

    from export.card import card_table

    table = card_table([entry], models)
    assert "| architecture | ensemble of resnet9 + airbench94 |" in table
    assert "| test-time augmentation (in the graph) | flip |" in table
    members = [dict(m, tta=t) for m, t in zip(entry.source["members"], ("flip", "none"))]
    own_views = entry.model_copy(update={"source": {**entry.source, "tta": "none", "members": members}})
    assert "| resnet9 flip, airbench94 none |" in card_table([own_views], models)

    from training.reports.evaluate import evaluate

    metrics = evaluate(checkpoint=ensemble_file, out=tmp_path / "report", tta="flip", device="cpu")
    assert metrics["top1"] == pytest.approx(entry.metrics["val_top1"], abs=1 / 15 + 1e-9)
    assert (tmp_path / "report" / "report.md").is_file()


def test_an_exported_ensemble_is_recovered_although_the_exporter_merged_its_equal_tensors(ensemble_file, tmp_path):
    """The exporter keeps one of any initializers with equal values: the second member's normalisation (the same
    as the first's) and airbench94's fixed BatchNorm scales are gone by name; recover still rebuilds the pair."""
    import onnx

    from export.__main__ import main as export_main

    models = tmp_path / "models"
    entry, _ = export_checkpoint(ensemble_file, "pair", "fp32", models, cache_dir=None)
    names = {init.name for init in onnx.load(str(models / entry.file)).graph.initializer}
    assert not any("members.1.normalize" in n for n in names)  # what made recover fail before
    out = tmp_path / "recovered.pt"
    argv = ["recover", "pair", "--out", str(out), "--models-dir", str(models), "--cache-dir", str(tmp_path / "c")]
    assert export_main(argv) == 0
    original, recovered = (
        model_from_checkpoint(load_checkpoint(ensemble_file)),
        model_from_checkpoint(load_checkpoint(out)),
    )
    x = torch.rand(4, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(original(x), recovered(x), atol=1e-5)


def _report(folder, logits, labels, fingerprint="same", tta="flip", classes=("a", "b")):
    from training.reports.predictions import METRICS_FILE, save_predictions

    folder.mkdir()
    save_predictions(
        folder / "predictions.npz", np.asarray(logits, np.float32), np.asarray(labels), list(classes), fingerprint
    )
    (folder / METRICS_FILE).write_text(f'{{"tta": "{tta}"}}')
    return folder


def test_an_ensemble_estimate_matches_class_names_as_compare_does(tmp_path):
    """compare pairs a report of the classes cat, dog with one of Cat, DOG (names matched as a folder's are); the
    ensemble estimate refused the same two reports as reports on different classes."""
    from training.ensemble import estimate_from_reports

    labels = [0, 1]
    a = _report(tmp_path / "a", [[2, 0], [0, 2]], labels, classes=("cat", "dog"))
    b = _report(tmp_path / "b", [[0, 2], [0, 2]], labels, classes=("Cat", "DOG"))
    assert [m["top1"] for m in estimate_from_reports([a, b])["members"]] == [1.0, 0.5]
    swapped = _report(tmp_path / "c", [[0, 2], [2, 0]], labels, classes=("dog", "cat"))
    # the same classes in another order pair by name only where the reports record their samples by name
    with pytest.raises(ValueError, match="list the same 2 classes in different orders .* evaluate them again"):
        estimate_from_reports([a, swapped])


def test_reports_estimate_their_ensemble_from_the_saved_logits(tmp_path, capsys):
    from training.ensemble import estimate_from_reports

    labels = [0, 0, 1, 1]
    # A is right on the first three, confidently wrong on the last; B is right only on the last, confidently,
    # and barely wrong elsewhere: the mean probability is right on all four.
    a = _report(tmp_path / "a", [[2, 0], [2, 0], [0, 2], [4, 0]], labels)
    b = _report(tmp_path / "b", [[0, 0.5], [0, 0.5], [0.5, 0], [0, 9]], labels)
    result = estimate_from_reports([a, b])
    assert [m["top1"] for m in result["members"]] == [0.75, 0.25]
    assert result["top1"] == 1.0
    vs = result["against_best_member"]
    assert vs["member"] == str(a) and vs["difference"] == 0.25 and vs["mcnemar"]["p_value"] == 1.0  # one image
    assert training_main(["ensemble", str(a), str(b)]) == 0
    assert "100.00%  their mean probability, 4 images: +25.00 points" in capsys.readouterr().out

    elsewhere = _report(tmp_path / "c", [[1, 0]] * 4, labels, fingerprint="other")
    with pytest.raises(ValueError, match="different samples .4 against 4 images, fingerprints same and other.: "):
        estimate_from_reports([a, elsewhere])
    with pytest.raises(ValueError, match="the same report is given twice"):  # it scored +0.00 as its own pair
        estimate_from_reports([a, tmp_path / "a"])
    assert training_main(["ensemble", str(a), str(b), "--out", str(tmp_path / "e.pt")]) == 2
    assert "not weights" in capsys.readouterr().err


def test_the_ensemble_never_goes_over_a_member_or_a_runs_own_checkpoints(tiny_run, other_member, tmp_path, capsys):
    """`--out` naming a member, the run's best.pt or last.pt (which resume continues from), a folder, or a path
    through a file: one line, exit 2, and every file as it was. Any other existing file only with --force; and a
    report is not written into a run's folder (it replaced the run's history.json)."""
    import shutil

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    a_file = tmp_path / "a-file"
    a_file.write_text("not a folder")
    cases = {
        run / "best.pt": "is one of the members: write to another file",
        run / "last.pt": f"would replace the last.pt of the run in {run}",
        tmp_path: "is a folder: name the checkpoint file to write",
        a_file / "pair.pt": f"{a_file} is a file, not a folder",
    }
    for out, message in cases.items():
        assert training_main(["ensemble", str(run), str(other_member), "--out", str(out)]) == 2, out
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err, err
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == before
    # An existing checkpoint (another model, a finished run's best.pt whose last.pt is gone) only with --force.
    (run / "last.pt").unlink()
    (tmp_path / "pair.pt").write_bytes(b"another model")
    for out in (run / "best.pt", tmp_path / "pair.pt"):
        kept = out.read_bytes()
        assert training_main(["ensemble", str(tiny_run), str(other_member), "--out", str(out)]) == 2, out
        assert f"--out {out} exists: write to a new file, or replace it with --force" in capsys.readouterr().err
        assert out.read_bytes() == kept
    assert training_main(["ensemble", str(tiny_run), str(other_member), "--out", str(out), "--force"]) == 0
    assert load_checkpoint(out)["meta"]["arch"] == "ensemble"
    assert training_main(["evaluate", "--checkpoint", str(tiny_run), "--out", str(run)]) == 2  # replaced its history
    err = capsys.readouterr().err
    assert f"--out {run} holds a training run (best.pt, summary.json)" in err, err
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == {
        name: data for name, data in before.items() if name != "last.pt"
    }
    notes = tmp_path / "notes"  # someone's folder: its report.md used to be replaced, its gradcam.png deleted
    notes.mkdir()
    (notes / "report.md").write_text("my notes")
    assert training_main(["evaluate", "--checkpoint", str(tiny_run), "--out", str(notes)]) == 2
    assert f"--out {notes} holds files and no report (report.md)" in capsys.readouterr().err
    assert (notes / "report.md").read_text() == "my notes"
    # another model's report: an ensemble or a comparison reading that folder would get this model's figures
    report = tmp_path / "report"
    assert training_main(["evaluate", "--checkpoint", str(tiny_run), "--out", str(report)]) == 0
    kept = (report / "metrics.json").read_bytes()
    assert training_main(["evaluate", "--checkpoint", str(other_member), "--out", str(report)]) == 2
    assert f"--out {report} holds the report of another model (" in capsys.readouterr().err
    assert (report / "metrics.json").read_bytes() == kept
    assert training_main(["evaluate", "--checkpoint", str(tiny_run), "--out", str(report)]) == 0  # its own: again
    assert training_main(["evaluate", "--checkpoint", str(run), "--out", str(a_file)]) == 2
    err = capsys.readouterr().err
    assert f"error: {a_file} is a file, not a folder" in err and "Traceback" not in err, err


def test_a_damaged_or_incomplete_report_is_named_not_a_traceback(tmp_path, capsys):
    labels = [0, 1]
    good = _report(tmp_path / "good", [[1, 0], [0, 1]], labels)
    cut = _report(tmp_path / "cut", [[1, 0], [0, 1]], labels)
    data = (cut / "predictions.npz").read_bytes()
    (cut / "predictions.npz").write_bytes(data[: len(data) // 2])
    unfinished = _report(tmp_path / "unfinished", [[1, 0], [0, 1]], labels)
    (unfinished / "metrics.json").unlink()  # written last: an evaluation stopped before it
    edited = _report(tmp_path / "edited", [[1, 0], [0, 1]], labels)
    (edited / "metrics.json").write_text('{"tta": "fl')
    cases = {
        cut: f"{cut / 'predictions.npz'} is damaged",
        unfinished: f"no metrics.json in {unfinished}: the report is incomplete",
        edited: f"{edited / 'metrics.json'} is not valid JSON",
    }
    # Valid JSON or npz of the wrong shape: each used to end in an AttributeError or TypeError traceback.
    for name, metrics in (("listed", "[1, 2]"), ("nothing", "null"), ("sourceless", '{"source": 7}')):
        report = _report(tmp_path / name, [[1, 0], [0, 1]], labels)
        (report / "metrics.json").write_text(metrics)
        cases[report] = f"{report / 'metrics.json'} is not a report's metrics"
    historic = _report(tmp_path / "historic", [[1, 0], [0, 1]], labels)
    (historic / "history.json").write_text("[1, 2]")
    cases[historic] = f"{historic / 'history.json'} is not a run's history"
    keyless = _report(tmp_path / "keyless", [[1, 0], [0, 1]], labels)
    np.savez(keyless / "predictions.npz", logits=np.zeros((2, 2), np.float32))
    cases[keyless] = f"{keyless / 'predictions.npz'} holds no labels, classes, fingerprint: not a report's"
    for report, message in cases.items():
        for command in (["ensemble", str(good), str(report)], ["compare", str(good), str(report)]):
            assert training_main(command) == 2, (command, report)
            err = capsys.readouterr().err
            assert message in err and "Traceback" not in err, err


def test_compare_refuses_reports_of_other_classes(tmp_path, capsys):
    """Predictions are indices into each model's own classes: reports of as many classes of other names used
    to be compared as if they were the same task."""
    a = _report(tmp_path / "a", [[1, 0], [0, 1]], [0, 1])
    b = _report(tmp_path / "b", [[1, 0], [1, 0]], [0, 1])
    other = _report(tmp_path / "other", [[1, 0], [0, 1]], [0, 1], classes=("cat", "dog"))
    assert training_main(["compare", str(a), str(b)]) == 0
    capsys.readouterr()
    assert training_main(["compare", str(a), str(other)]) == 2
    assert "A predicts the classes a, b and B cat, dog: not the same task" in capsys.readouterr().err


def test_reports_and_checkpoints_are_not_mixed(tiny_run, tmp_path, capsys):
    a = _report(tmp_path / "a", [[1, 0]], [0])
    assert training_main(["ensemble", str(a), str(tiny_run), "--out", str(tmp_path / "e.pt")]) == 2
    assert "not a mixture" in capsys.readouterr().err


def test_each_member_averages_its_own_views_before_the_members_are_averaged(tiny_run, other_member, tmp_path):
    out = tmp_path / "e.pt"
    meta = join_checkpoints([tiny_run, other_member], out, tta=["flip", "none"])
    assert [m["tta"] for m in meta["members"]] == ["flip", "none"]
    a, b = (model_from_checkpoint(load_checkpoint(p)) for p in (tiny_run / "best.pt", other_member))
    x = torch.rand(4, 3, 32, 32)
    model = model_from_checkpoint(load_checkpoint(out))
    assert model.cam_layer is model.backbone.members[0].model.cam_layer  # Grad-CAM reaches past the member's TTA
    with torch.no_grad():
        joined = torch.softmax(model(x), dim=1)
        flipped = (a(x) + a(x.flip(3))) / 2
        expected = (torch.softmax(flipped, dim=1) + torch.softmax(b(x), dim=1)) / 2
    assert torch.allclose(joined, expected, atol=1e-6)
    with pytest.raises(ValueError, match="one per member"):
        join_checkpoints([tiny_run, other_member], out, tta=["flip"])
    with pytest.raises(ValueError, match="unknown test-time augmentation"):
        join_checkpoints([tiny_run, other_member], out, tta=["flip", "sideways"])


def test_an_ensemble_quantises_to_int8(ensemble_file, tmp_path):
    import onnx

    entry, parity = export_checkpoint(ensemble_file, "pair-int8", "int8", tmp_path, cache_dir=None)
    assert parity.passed and parity.top1_agreement >= 0.98
    proto = onnx.load(str(tmp_path / entry.file))
    assert onnx.TensorProto.INT8 in {init.data_type for init in proto.graph.initializer}
    # The members' log-probabilities and their average stay float: uint8 steps over them would move
    # probabilities by tenths.
    from export.variants import input_layers, probability_tail

    tail = set(probability_tail(proto))
    assert tail and not [n.name for n in proto.graph.node if n.name in tail and n.op_type == "QuantizeLinear"]
    # Each member's first layer (the ResNet-9's stem, airbench94's whitening) reads the image and stays float.
    initializers = {i.name: i.data_type for i in proto.graph.initializer}
    first = [n for n in proto.graph.node if n.name in input_layers(proto)]
    assert len(first) == 2 and all(initializers.get(n.input[1]) == onnx.TensorProto.FLOAT for n in first)
    logits = OnnxClassifier(tmp_path / entry.file, device="cpu").logits(np.ones((2, 3, 32, 32), np.float32))
    assert np.isfinite(logits).all()


def test_an_estimate_undoes_a_calibrated_graphs_temperature_as_the_joined_network_would(tmp_path):
    """A calibrated ONNX file's report holds its logits divided by T; the joined network averages each member's
    softmax of its raw logits. Averaged as stored, the calibrated member would weigh more (here: the answer
    would flip)."""
    import json

    from training.ensemble import estimate_from_reports

    raw = {"checkpoint": np.array([[2.0, 0.0]]), "onnx": np.array([[0.0, 1.5]])}
    paths = []
    for kind, logits in raw.items():
        folder = tmp_path / kind
        folder.mkdir()
        stored = logits / 0.5 if kind == "onnx" else logits
        np.savez(
            folder / "predictions.npz",
            logits=stored,
            labels=np.array([0]),
            predictions=stored.argmax(1),
            fingerprint=np.array("same"),
            classes=np.array(["a", "b"]),
        )
        source = {
            "kind": kind,
            **({"calibration": {"method": "temperature", "temperature": 0.5}} if kind == "onnx" else {}),
        }
        (folder / "metrics.json").write_text(json.dumps({"source": source, "tta": "none"}))
        paths.append(folder)
    # softmax [0.88, 0.12] and [0.18, 0.82] average to class 0 (right); with the divided logits' [0.05, 0.95], to 1
    assert estimate_from_reports(paths)["top1"] == 1.0


def test_a_last_pt_member_records_its_own_epochs_top1_not_its_runs_best(tiny_run, other_member, tmp_path):
    """A member given as last.pt was listed (and printed) with the top-1 of its run's best epoch, which best.pt
    holds, beside the epoch of the weights it contributes."""
    ckpt = load_checkpoint(tiny_run / "last.pt")
    entry = ckpt["history"][0]  # a real epoch's figures, for the report's curves
    history = [dict(entry, epoch=epoch, val_top1=top1) for epoch, top1 in ((1, 0.9), (2, 0.5), (3, 0.4))]
    last, best = tmp_path / "run" / "last.pt", tmp_path / "run" / "best.pt"
    last.parent.mkdir()
    save_checkpoint(dict(ckpt, epoch=3, history=history, best={"epoch": 1, "val_top1": 0.9}), last)
    save_checkpoint(dict(ckpt, epoch=1, history=history[:1], best={"epoch": 1, "val_top1": 0.9}), best)
    for path, epoch in ((last, 3), (best, 1)):
        (member, _) = join_checkpoints([path, other_member], tmp_path / f"joined-{path.stem}.pt")["members"]
        assert (member["epoch"], member["val_top1"]) == (epoch, history[epoch - 1]["val_top1"])
    # evaluate's report says the same of the last.pt it reads
    assert training_main(["evaluate", "--checkpoint", str(last), "--out", str(tmp_path / "report")]) == 0
    assert "Training recorded 40.00% val top-1 for this checkpoint" in (tmp_path / "report" / "report.md").read_text()


def _nan_checkpoint(tiny_run, folder):
    """The tiny run's best.pt with every weight NaN: a diverged or damaged model."""
    ckpt = load_checkpoint(tiny_run / "best.pt")
    for weights in (ckpt["model"], ckpt.get("ema") or {}):
        for tensor in weights.values():
            if tensor.is_floating_point():
                tensor.fill_(float("nan"))
    folder.mkdir(parents=True, exist_ok=True)
    save_checkpoint(ckpt, folder / "best.pt")
    return folder / "best.pt"


def test_compare_refuses_a_model_that_answers_nan_as_evaluate_does(tiny_run, tmp_path, capsys):
    """compare paired the argmax of NaN logits (class 0 for every image) as the model's predictions."""
    broken = _nan_checkpoint(tiny_run, tmp_path / "broken")
    assert training_main(["compare", str(tiny_run), str(broken), "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert f"{broken} is broken: it answers NaN or infinite logits" in err and "Traceback" not in err, err


def test_ablate_refuses_a_variant_that_answers_nan_as_evaluate_does(image_folder, tiny_run, tmp_path, monkeypatch):
    """An ablation tabulated a variant answering NaN with a NaN loss and an arbitrary top-1, as a result."""
    import shutil

    import training.reports.ablate as ablate_mod
    from conftest import tiny_overrides

    def trained_as_the_tiny_run(run_dir, config):  # each variant's training, in no time
        shutil.copytree(tiny_run, run_dir, dirs_exist_ok=True)
        if run_dir.name.endswith("0.1"):
            _nan_checkpoint(tiny_run, run_dir)
        return "trained"

    monkeypatch.setattr(ablate_mod, "run_variant", trained_as_the_tiny_run)
    sets = [s for s in tiny_overrides(image_folder, tmp_path / "cache") if not s.startswith("lr=")]
    with pytest.raises(UsageError, match=r"lr-0\.1/best\.pt is broken: it answers NaN or infinite logits"):
        ablate_mod.ablate("resnet9_half_cpu", ["lr=0.05,0.1"], sets, out=tmp_path / "a", device="cpu")
    assert not (tmp_path / "a" / "ablation.json").exists()


def test_members_of_other_classes_are_refused_naming_what_each_lacks():
    """The join's refusal says which classes one member has and the other lacks, or that only their order
    differs, rather than printing both lists as Python reprs; it names the members in the order given (it named
    the second first)."""
    from training.ensemble import check_compatible

    first = {"arch": "resnet9", "classes": ["cat", "dog", "ship"], "data_fingerprint": "f"}
    other = {**first, "classes": ["cat", "dog", "frog", "ship"]}
    with pytest.raises(UsageError) as refused:
        check_compatible([first, other], ["runs/a", "runs/c4"])
    assert str(refused.value) == "runs/a and runs/c4 differ in classes: only runs/a: none; only runs/c4: frog"
    reordered = {**first, "classes": ["dog", "cat", "ship"]}
    with pytest.raises(UsageError) as refused:
        check_compatible([first, reordered], ["runs/a", "runs/b"])
    assert str(refused.value) == (
        "runs/a and runs/b differ in classes: the same names in another order (cat, dog, ship against dog, cat, ship)"
    )

"""The ensemble estimate from reports whose models list the same classes in other orders: averaged by class name,
as `compare` pairs them; other class sets are refused naming what differs."""

from __future__ import annotations

import json

import numpy as np
import pytest

from test_compare_class_order import CLASSES, ORDER, _images, _one_error_line, _other_model, _permuted, _report
from training.__main__ import main
from training.ensemble import estimate_from_reports


@pytest.fixture
def reports(tmp_path):
    """Reports A and B of two different models on 90 samples, where their average beats neither alone on some,
    and B's twin in another class order."""
    rng = np.random.default_rng(0)
    images, labels = _images(90, 1), rng.integers(0, 3, 90)
    logits_a, logits_b = rng.normal(size=(90, 3)), rng.normal(size=(90, 3))
    logits_a[np.arange(90), labels] += 1.0
    logits_b[np.arange(90), labels] += 1.0
    a = _report(tmp_path / "a", images, labels, logits_a, CLASSES)
    b = _report(tmp_path / "b", images, labels, logits_b, CLASSES)
    b_permuted = _permuted(tmp_path / "b-permuted", images, labels, logits_b)
    return a, b, b_permuted, (images, labels, logits_a, logits_b)


def _figures(result: dict) -> dict:
    """The estimate without the report paths that tell the two runs apart."""
    members = [{k: v for k, v in m.items() if k != "report"} for m in result["members"]]
    vs = {k: v for k, v in result["against_best_member"].items() if k != "member"}
    best = [m["report"] for m in result["members"]].index(result["against_best_member"]["member"])
    return {"samples": result["samples"], "top1": result["top1"], "members": members, "vs": vs, "best": best}


def test_a_report_in_another_class_order_gives_the_estimate_of_the_same_order(reports, capsys):
    a, b, b_permuted, _ = reports
    plain = estimate_from_reports([a, b])
    # a test of something: the members differ, and their average is neither
    assert plain["members"][0]["top1"] != plain["members"][1]["top1"]
    assert plain["top1"] not in (m["top1"] for m in plain["members"])
    assert _figures(estimate_from_reports([a, b_permuted])) == _figures(plain)
    # the permuted report first: the other is put in its order
    assert _figures(estimate_from_reports([b_permuted, a])) == _figures(estimate_from_reports([b, a]))
    assert main(["ensemble", str(a), str(b_permuted), "--json"]) == 0
    assert _figures(json.loads(capsys.readouterr().out)) == _figures(plain)


def test_a_permuted_copy_of_one_report_is_still_one_model(reports):
    a, _, _, (images, labels, logits_a, _) = reports
    a_permuted = _permuted(a.parent / "a-permuted", images, labels, logits_a)
    with pytest.raises(ValueError, match=f"{a} and {a_permuted} hold the same predictions, logit for logit"):
        estimate_from_reports([a, a_permuted])


def test_other_samples_in_another_class_order_are_refused(reports, tmp_path, capsys):
    a, _, _, (_, labels, _, logits_b) = reports
    other = _permuted(tmp_path / "other", _images(90, 9), labels, logits_b)
    assert main(["ensemble", str(a), str(other)]) == 2
    assert f"{a} and {other} are reports on different samples" in _one_error_line(capsys)


@pytest.mark.parametrize("old", ["a", "b", "both"])
def test_reports_of_an_earlier_version_in_other_orders_are_refused_saying_to_evaluate_again(
    reports, tmp_path, capsys, old
):
    """A report without its fingerprint by name holds its samples' digest in its own class order only: another
    report in another order cannot be checked against it."""
    a, _, _, (images, labels, logits_a, logits_b) = reports
    if old != "b":
        a = _report(tmp_path / "old-a", images, labels, logits_a, CLASSES, by_name=False)
    b = _permuted(tmp_path / "old-b", images, labels, logits_b, by_name=old == "a")
    assert main(["ensemble", str(a), str(b)]) == 2
    err = _one_error_line(capsys)
    assert f"{a} and {b} list the same 3 classes in different orders (from index 0: alpha against gamma)" in err
    said = {"a": f"{a} was written", "b": f"{b} was written", "both": "both were written"}[old]
    assert said in err and err.endswith(f"evaluate {'them' if old == 'both' else 'it'} again"), err


def test_reports_of_an_earlier_version_in_one_order_still_pair(reports, tmp_path):
    a, b, _, (images, labels, logits_a, _) = reports
    old_a = _report(tmp_path / "old-a", images, labels, logits_a, CLASSES, by_name=False)
    assert _figures(estimate_from_reports([old_a, b])) == _figures(estimate_from_reports([a, b]))


@pytest.mark.parametrize(
    ("classes_b", "said"),
    [
        (["alpha", "beta", "delta"], "A predicts the classes alpha, beta, gamma and B alpha, beta, delta: not the "
         "same task (only A: gamma; only B: delta)"),
        (["gamma", "alpha", "beta", "delta"], "A has 3 classes and B has 4 (only A: none; only B: delta): not the "
         "same task"),
        (["gamma", "alpha", "beta", "ALPHA"], "but one of them has two classes named ALPHA (ignoring case)"),
    ],
)  # fmt: skip
def test_other_class_sets_are_refused_in_one_line_naming_what_differs(reports, tmp_path, capsys, classes_b, said):
    a, _, _, (images, labels, _, _) = reports
    logits = np.random.default_rng(5).normal(size=(len(labels), len(classes_b)))
    b = _report(tmp_path / "other-classes", images, labels, logits, classes_b)
    assert main(["ensemble", str(a), str(b)]) == 2
    err = _one_error_line(capsys)
    assert f"reports {a} (A) and {b} (B): " in err and said in err, err


# -- reports that evaluate wrote, of checkpoints ----------------------------------------------------------------


def test_evaluated_checkpoints_in_another_class_order_give_the_estimate_of_the_same_order(tiny_run, tmp_path, capsys):
    reports = {}
    for name, checkpoint in {
        "a": tiny_run / "best.pt",
        "b": _other_model(tiny_run, tmp_path / "b.pt", [0, 1, 2]),
        "b-permuted": _other_model(tiny_run, tmp_path / "b-permuted.pt", ORDER),
    }.items():
        reports[name] = tmp_path / f"report-{name}"
        args = ["evaluate", "--checkpoint", str(checkpoint), "--out", str(reports[name]), "--device", "cpu"]
        assert main([*args, "--no-sample-figures"]) == 0
    capsys.readouterr()
    plain = estimate_from_reports([reports["a"], reports["b"]])
    assert plain["members"][0]["top1"] != plain["members"][1]["top1"]  # two models, not one
    assert _figures(estimate_from_reports([reports["a"], reports["b-permuted"]])) == _figures(plain)
    assert main(["ensemble", str(reports["b-permuted"]), str(reports["a"])]) == 0
    assert "their mean probability" in capsys.readouterr().out

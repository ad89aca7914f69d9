"""bench_training's --models NAME:key=value,...: a value may be a YAML flow list or mapping, whose commas are not
the arguments' separators; a spec that cannot be read is one usage line, not a traceback."""

from __future__ import annotations

import json
import sys

import pytest

from conftest import ROOT
from inference.errors import UsageError

sys.path.insert(0, str(ROOT / "bench"))

import bench_training  # noqa: E402
import termination  # noqa: E402


def test_a_list_value_is_one_argument():
    """`--models "airbench94:widths=[128,384,384]"` (airbench95's widths) was split at every comma: a yaml
    ParserError traceback on "widths=[128"."""
    assert bench_training.parse_spec("airbench94:widths=[128,384,384]") == ("airbench94", {"widths": [128, 384, 384]})


def test_lists_and_mappings_sit_beside_scalars():
    name, kwargs = bench_training.parse_spec("m:a=1,b=[1,2],c={x: 1}")
    assert name == "m" and kwargs == {"a": 1, "b": [1, 2], "c": {"x": 1}}


def test_nested_brackets_and_a_trailing_comma():
    assert bench_training.parse_spec("m:a={x: [1, 2], y: {z: 3}},b=2,") == (
        "m",
        {"a": {"x": [1, 2], "y": {"z": 3}}, "b": 2},
    )


@pytest.mark.parametrize(
    "spec, said",
    [
        ("airbench94:widths=[128,384,384", "a bracket is not closed"),
        ("airbench94:widths=128,384]", "']' closes no bracket"),
        ("airbench94:widths=[128,384}", "is not YAML"),
        ("airbench94:name='unclosed", "is not YAML"),
        ("airbench94:c={x:1}", "put a space after its colon"),
        ("airbench94:widths", "'widths' is not key=value"),
        ("airbench94:=3", "'=3' is not key=value"),
        ("airbench94:widths=[1,2,3],widths=[4,5,6]", "'widths' is given twice"),
    ],
)
def test_a_malformed_spec_is_a_usage_error_naming_it(spec, said):
    with pytest.raises(UsageError) as refused:
        bench_training.parse_spec(spec)
    message = str(refused.value)
    assert message.startswith(f"--models {spec!r}: ") and said in message and "\n" not in message, message


@pytest.mark.parametrize(
    "spec, kwargs",
    [
        ("m:name='a,b'", {"name": "a,b"}),
        ('m:name="x,y",b=2', {"name": "x,y", "b": 2}),
        ('m:s="]"', {"s": "]"}),
        ("m:s='[',b=[1,'x]']", {"s": "[", "b": [1, "x]"]}),
        ("m:s='it''s, ok',t=\"a\\\",b\"", {"s": "it's, ok", "t": 'a",b'}),
        ("m:name=it's,b=2", {"name": "it's", "b": 2}),
    ],
)
def test_a_quoted_value_keeps_its_commas_and_brackets(spec, kwargs):
    """Quoting, which the refusal of a value advises, is how YAML keeps a comma or a bracket in text: the split
    on commas refused s="]" (read whole before) and cut name='a,b' in two. An apostrophe inside a plain value
    opens no quote."""
    assert bench_training.parse_spec(spec) == ("m", kwargs)


@pytest.mark.parametrize("value", ["2001-13-45", "!!bool maybe", "!!float x"])
def test_a_value_yaml_cannot_build_is_a_usage_error(value):
    """YAML that scans, but whose date or tag builds no value, raised ValueError or KeyError: a traceback."""
    spec = f"m:a={value}"
    with pytest.raises(UsageError) as refused:
        bench_training.parse_spec(spec)
    message = str(refused.value)
    assert message.startswith(f"--models {spec!r}: value {value!r}: ") and "quote it" in message, message
    assert "\n" not in message, message


def _run(argv: list[str], capsys) -> tuple[int, str]:
    with pytest.raises(SystemExit) as exit_:
        termination.run(lambda: bench_training.main(argv))
    return exit_.value.code, capsys.readouterr().err


@pytest.mark.parametrize(
    "spec", ["airbench94:widths=[128,384", "airbench94:widths=[1,2],b", "airbench94:widths=2001-13-45"]
)
def test_the_benchmark_refuses_a_malformed_spec_in_one_line_with_status_2(spec, tmp_path, capsys, monkeypatch):
    measured = []
    monkeypatch.setattr(bench_training, "loader_throughput", lambda *args: measured.append(args) or 1.0)
    out = tmp_path / "training.json"
    status, err = _run(["--models", spec, "--device", "cpu", "--out", str(out)], capsys)
    assert status == 2 and "Traceback" not in err, err
    assert err.strip().splitlines() == [err.strip()] and err.startswith(f"error: --models {spec!r}: "), err
    assert not measured and not out.exists()


def test_the_benchmark_builds_the_model_with_the_list_it_was_given(tmp_path, monkeypatch):
    """The model is built from the list (airbench94 takes any widths), not only the spec parsed."""
    monkeypatch.setattr(bench_training, "loader_throughput", lambda *args: 1.0)
    monkeypatch.setattr(bench_training, "train_throughput", lambda spec, *args, **kwargs: 1.0)
    monkeypatch.setattr(bench_training, "training_gflop_per_image", lambda spec, size: 1.0)
    spec = "airbench94:widths=[16,32,32]"
    out = tmp_path / "training.json"
    assert bench_training.main(["--models", spec, "--device", "cpu", "--out", str(out)]) == 0
    assert list(json.loads(out.read_text())["models"]) == [spec]

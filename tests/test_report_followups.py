"""Follow-ups of the reports' audit: what the reliability figure says of its temperature, run names the curves
draw as math, the class lists and counts of report.md, and `python -m training models` building every network at
full size to count it."""

from __future__ import annotations

import shutil

import pytest
import torch

from training.__main__ import main
from training.plots import CurveInfo, plot_compared_curves, plot_training_curves
from training.reports import evaluate as evaluate_module
from training.reports.report_text import figure_subtitle, write_report_md


def _reliability_titles(monkeypatch) -> list[str]:
    titles: list[str] = []

    def keep(panels, path, subtitle=None):
        titles.extend(title for title, _ in panels)

    monkeypatch.setattr(evaluate_module.figures, "plot_reliability", keep)
    return titles


def test_a_graphs_temperature_is_drawn_in_sample_only_on_its_own_validation_split(
    tiny_models_dir, image_folder, tmp_path, monkeypatch
):
    """The reliability figure of a calibrated ONNX model scored on another dataset's validation split said "T
    fitted on these images: in-sample", where report.md said "not these images"."""
    titles = _reliability_titles(monkeypatch)
    other = tmp_path / "other"
    shutil.copytree(image_folder, other)
    onnx = str(tiny_models_dir / "tiny.onnx")
    common = ["--no-sample-figures", "--dataset", "folder", "--val-size", "15"]
    assert main(["evaluate", "--onnx", onnx, "--out", str(tmp_path / "own"), *common, "--data", str(image_folder)]) == 0
    assert "in-sample" in titles[-1], titles
    for split in ("val", "all"):
        out = str(tmp_path / f"other-{split}")
        assert main(["evaluate", "--onnx", onnx, "--out", out, *common, "--data", str(other), "--split", split]) == 0
        assert "T fitted on" not in titles[-1], titles


def test_a_checkpoints_temperature_is_still_drawn_in_sample_on_its_validation_split(tiny_run, tmp_path, monkeypatch):
    titles = _reliability_titles(monkeypatch)
    argv = ["evaluate", "--checkpoint", str(tiny_run), "--no-sample-figures", "--device", "cpu"]
    assert main([*argv, "--out", str(tmp_path / "val")]) == 0
    assert main([*argv, "--out", str(tmp_path / "all"), "--split", "all"]) == 0
    assert titles[1].endswith("T fitted on these images: in-sample") and titles[3].endswith("the val part of these")


@pytest.mark.parametrize("name", ["runs/$\\foo$", "$5 or $10"])
def test_run_names_with_dollar_signs_are_drawn_as_written(name, tmp_path, monkeypatch):
    """A run folder named ``$\\foo$`` stopped its training at the first epoch's curves (ParseFatalException), and
    ``$5 or $10`` was drawn as an italic ``5 or``."""
    import matplotlib as mpl

    from training import plots

    parsed_as_math: list[bool] = []
    real_save = plots.save_figure

    def save(fig, path, *args, **kwargs):
        parsed_as_math.append(mpl.rcParams["text.parse_math"])
        real_save(fig, path, *args, **kwargs)

    monkeypatch.setattr(plots, "save_figure", save)
    history = [
        {"epoch": e, "train_loss": 1.0 / e, "train_acc": 0.5, "val_top1": 0.5, "val_loss": 1.0, "lr": 0.1}
        for e in (1, 2)
    ]
    plot_training_curves(history, tmp_path / "curves.png", CurveInfo(), f"resnet9 · run {name}")
    plot_compared_curves({f"A {name}": history, "B other": history}, tmp_path / "compared.png")
    assert parsed_as_math == [False, False]
    assert (tmp_path / "curves.png").stat().st_size and (tmp_path / "compared.png").stat().st_size
    assert mpl.rcParams["text.parse_math"], "the setting outlived the plot"


def test_the_curves_of_a_single_epoch_show_it(tmp_path, monkeypatch):
    """After a run's first epoch (and for good after a one-epoch run) training_curves.png had three empty panels:
    a line through one point draws nothing; its axis was ticked 0.945 to 1.050."""
    from training import plots

    figs: list = []
    monkeypatch.setattr(plots, "save_figure", lambda fig, path, *a, **k: figs.append(fig))
    history = [{"epoch": 1, "train_loss": 1.1, "train_acc": 0.3, "val_top1": 0.4, "val_loss": 1.0, "lr": 0.1}]
    plot_training_curves(history, tmp_path / "curves.png")
    (fig,) = figs
    lines = [line for ax in fig.axes for line in ax.get_lines()]
    assert len(lines) == 5 and all(line.get_marker() not in (None, "None", "", " ") for line in lines)
    assert all(list(ax.get_xticks()) == [1] for ax in fig.axes)


def _report(tmp_path, accuracies: dict[str, float | None], num_samples: int = 40) -> str:
    metrics = {
        "source": {"kind": "checkpoint", "path": "runs/x/best.pt", "arch": "resnet9"},
        "data": {"split": "test"},
        "data_description": "the test split",
        "tta": "none",
        "num_samples": num_samples,
        "num_classes": len(accuracies),
        "top1": 0.5,
        "top3": None,
        "top5": None,
        "loss": 1.0,
        "ece": 0.1,
        "macro_avg": {"f1": 0.5},
        "mean_per_class_accuracy": 0.5,
        "wall_time_s": 1.0,
        "images_per_s": 40.0,
        "device": "cpu",
        "per_class": [
            {
                "class": c,
                "accuracy": a,
                "precision": a or 0.0,
                "recall": a,
                "f1": a,
                "support": 10 if a is not None else 0,
            }
            for c, a in accuracies.items()
        ],
        "top_confusions": [],
    }
    write_report_md(tmp_path / "report.md", metrics, {}, [])
    return (tmp_path / "report.md").read_text()


def _class_line(report: str) -> str:
    return next((line for line in report.splitlines() if line.startswith(("Weakest", "Every class"))), "")


def test_a_class_is_called_strongest_only_above_the_weakest_shown(tmp_path):
    """With ties the strongest classes listed one at the weakest's accuracy: "strongest: alpha 100.00%, delta
    0.00%" beside "Weakest classes: beta 0.00%, gamma 0.00%"."""
    tied = _class_line(_report(tmp_path, {"alpha": 1.0, "beta": 0.0, "gamma": 0.0, "delta": 0.0}))
    assert tied == "Weakest classes: beta 0.00%, gamma 0.00%; strongest: alpha 100.00%.", tied
    flat = _class_line(_report(tmp_path, {"alpha": 0.5, "beta": 0.5, "gamma": None}))
    assert flat == "Every class with images here scored 50.00%.", flat
    assert _class_line(_report(tmp_path, {"alpha": 1.0, "beta": 1.0})) == "Every class scored 100.00%."
    spread = _class_line(_report(tmp_path, {"a": 0.1, "b": 0.2, "c": 0.9, "d": 1.0}))
    assert spread == "Weakest classes: a 10.00%, b 20.00%; strongest: d 100.00%, c 90.00%.", spread
    # a top class is not weak: "Weakest classes: a 50.00%, b 100.00%."
    top_tied = _class_line(_report(tmp_path, {"a": 0.5, "b": 1.0, "c": 1.0, "d": 1.0}))
    assert top_tied == "Weakest classes: a 50.00%; strongest: d 100.00%, c 100.00%.", top_tied


def _per_class_rows(report: str) -> list[str]:
    assert "\n## Per class\n" in report, report
    after = report.split("\n## Per class\n", 1)[1]
    return after.strip("\n").split("\n\n", 1)[0].splitlines()


def test_report_md_has_a_per_class_table_with_names_in_full(tmp_path):
    """report.md had no per-class table, only the weakest classes: a class the figures draw as boxes (猫), and
    metrics.json writes as \\u732b, was named in full nowhere, though the figures' warning said report.md did."""
    report = _report(tmp_path, {"b|c": 0.25, "猫": 1.0, "new\nline": 0.5, "absent": None})
    rows = _per_class_rows(report)
    assert rows == [
        "| class | images | accuracy | precision | recall | F1 |",
        "|---|---|---|---|---|---|",
        "| b\\|c | 10 | 25.00% | 25.00% | 25.00% | 25.00% |",
        "| 猫 | 10 | 100.00% | 100.00% | 100.00% | 100.00% |",
        "| new line | 10 | 50.00% | 50.00% | 50.00% | 50.00% |",
        "| absent | 0 | n/a | 0.00% | n/a | n/a |",
    ], rows
    assert report.index("## Per class") < report.index("## Figures")


def test_the_per_class_table_lists_every_class_of_metrics_json(tiny_run, tmp_path):
    import json

    out = tmp_path / "report"
    argv = ["evaluate", "--checkpoint", str(tiny_run), "--no-sample-figures", "--device", "cpu", "--out", str(out)]
    assert main(argv) == 0
    per_class = json.loads((out / "metrics.json").read_text())["per_class"]
    rows = _per_class_rows((out / "report.md").read_text())[2:]
    cells = [[cell.strip() for cell in row.strip("|").split("|")] for row in rows]

    def pct(x):
        return "n/a" if x is None else f"{100 * x:.2f}%"

    expected = [
        [c["class"], str(c["support"]), pct(c["accuracy"]), pct(c["precision"]), pct(c["recall"]), pct(c["f1"])]
        for c in per_class
    ]
    assert len(per_class) == 3 and cells == expected, (cells, expected)


def test_one_image_is_counted_in_the_singular():
    from types import SimpleNamespace

    source = SimpleNamespace(
        kind="checkpoint",
        arch="resnet9",
        path=SimpleNamespace(name="best.pt", parent=SimpleNamespace(name="x")),
        info={},
    )
    assert figure_subtitle(source, "val", "none", 1).endswith("val split, 1 image")
    assert figure_subtitle(source, "val", "none", 1234).endswith("val split, 1,234 images")


def test_one_image_is_counted_in_the_singular_in_the_report(tmp_path):
    assert "(1 image, 2 classes)" in _report(tmp_path, {"alpha": 1.0, "beta": None}, num_samples=1)


def test_the_models_command_counts_parameters_without_building_the_networks(monkeypatch, capsys):
    """`python -m training models` built and initialised every network at full size to count it (WRN-28-10
    twice): about 25 s on 2 cores."""
    from training import models

    devices = set()
    count = models.count_parameters

    def counting(model):
        devices.update(p.device.type for p in model.parameters())
        return count(model)

    monkeypatch.setattr(models, "count_parameters", counting)
    assert main(["models"]) == 0
    assert devices == {"meta"}
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 1 + len(models.list_models())
    assert any(line.split()[:2] == ["wrn_28_10", "36,479,194"] for line in lines), lines


@pytest.mark.parametrize("name", ["edgenext_small", "vit_small_patch4"])
def test_networks_with_drop_path_schedules_build_on_the_meta_device(name):
    from training.models import count_parameters, create_model

    with torch.device("meta"):
        on_meta = create_model(name, 10)
    assert count_parameters(on_meta) == count_parameters(create_model(name, 10))

"""The figures the model card and the docs quote, checked against where they were measured: the manifest (each
model's accuracy, parity and calibration), the shipped reports, `bench/results/*.json` and the code whose
behaviour a doc quantifies. A re-export, a re-run benchmark or a changed default that leaves a quoted figure
behind fails here, not in a reader's hands."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CARD = (ROOT / "models/README.md").read_text(encoding="utf-8")
MANIFEST = json.loads((ROOT / "models/manifest.json").read_text(encoding="utf-8"))
RESULTS = ROOT / "bench/results"


def _card_section(model: str) -> str:
    """The model card's `## ` section whose heading names the model (its own heading, or its family's)."""
    sections = re.split(r"^## ", CARD, flags=re.MULTILINE)[1:]
    family = re.sub(r"-(int8|fp16)$", "", model)
    for section in sections:
        heading = section.splitlines()[0]
        if re.search(rf"\b{re.escape(model)}\b", heading) or re.search(rf"\b{re.escape(family)}\b", heading):
            return section
    raise AssertionError(f"models/README.md has no section for {model}")


def _percent(fraction: float) -> str:
    return f"{fraction * 100:.2f}%"


def _count(value: float) -> str:
    return f"{round(value):,}"


@pytest.mark.parametrize("entry", MANIFEST["models"], ids=[m["name"] for m in MANIFEST["models"]])
def test_card_quotes_the_manifest(entry):
    """Each shipped model's top-1, top-5, temperature, ECE before -> after and parity agreement, as the manifest
    records them, appear in its section of the card."""
    section = _card_section(entry["name"])
    metrics = entry["metrics"]
    calibration = metrics["calibration"]
    expected = [
        f"{_percent(metrics['val_top1'])} / {_percent(metrics['val_top5'])}",
        f"{calibration['temperature']:.4f}",
        _percent(metrics["parity"]["top1_agreement"]).replace("100.00%", "100%"),
    ]
    if entry["precision"] == "int8":
        expected.append(f"{calibration['before']['ece']:.4f} -> {calibration['after']['ece']:.4f}")
    missing = [figure for figure in expected if figure not in section]
    assert not missing, f"{entry['name']}: the card does not quote {missing}"


def _images_per_s(name: str) -> dict[str, float]:
    data = json.loads((RESULTS / name).read_text(encoding="utf-8"))
    per_model = data.get("models") or data["images_per_s"]
    return {model: (v["images_per_s"] if isinstance(v, dict) else v) for model, v in per_model.items()}


def _throughput_rows() -> dict[str, list[str]]:
    table = CARD.split("## Throughput of every shipped file", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in table.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if line.startswith("| ") and cells[0].split()[0].endswith("-cifar10"):
            rows[cells[0].split()[0]] = cells[1:]
    return rows


def test_throughput_table_quotes_each_cpus_results():
    """The `service score` table: each cell's Zen 5 / Zen 4 / Zen 3 figures are those of the results file the
    card names for that processor (the default's Zen 4 and Zen 3 figures from its 10,000-image runs)."""

    def default_of(name: str) -> dict[str, float]:
        return {k: v for k, v in _images_per_s(name).items() if k.startswith("resnet9-airbench94-")}

    zen5 = _images_per_s("score-models-epyc-zen5.json")
    zen4 = _images_per_s("score-variants-zen4.json") | default_of("score-models-epyc-zen4.json")
    zen3 = _images_per_s("score-models-epyc-zen3.json") | default_of("score-ensemble-epyc-zen3.json")
    rows = _throughput_rows()
    assert len(rows) == 4, rows
    checked = 0
    for family, cells in rows.items():
        for column, suffix in enumerate(("-int8", "", "-fp16")):
            figures = cells[column].split(" / ")
            if len(figures) == 1:  # "not shipped": no file, so no figure on any processor
                assert all(family + suffix not in m for m in (zen5, zen4, zen3)), (family, suffix, cells[column])
                continue
            for cpu, measured, quoted in zip(("Zen 5", "Zen 4", "Zen 3"), (zen5, zen4, zen3), figures, strict=True):
                value = measured.get(family + suffix)
                quoted = quoted.split(" images/s")[0].strip()
                if value is None:
                    assert not quoted[0].isdigit(), f"{family}{suffix} on {cpu}: {quoted} has no result file"
                    continue
                assert quoted == _count(value), f"{family}{suffix} on {cpu}: card {quoted}, measured {value}"
                checked += 1
    assert checked >= 20, checked


def test_default_throughput_on_each_cpu():
    """The default's figures at 10,000 images, each in the sentence that names the processor its results file
    records."""
    section = _card_section("resnet9-airbench94-cifar10-int8")
    for name, cpu, family_model in (
        ("score-ensemble-epyc-zen3.json", "Zen 3", "family 25 model 1)"),
        ("score-ensemble-epyc-zen5.json", "Zen 5", "family 26 model 2)"),
        ("score-ensemble-intel-icelake.json", "Ice Lake", "family 6 model 106)"),
        ("score-models-epyc-zen4.json", "Zen 4", "family 25 model 17)"),
    ):
        data = json.loads((RESULTS / name).read_text(encoding="utf-8"))
        assert family_model in data["cpu"], (name, data["cpu"])
        at = section.index(f"`bench/results/{name}`")
        ends = [i for i in (section.find(" On an ", at), section.find(" |", at)) if i >= 0]
        sentence = section[section.rfind(cpu, 0, at) : min(ends)]
        int8 = data["models"]["resnet9-airbench94-cifar10-int8"]["images_per_s"]
        fp32 = data["models"]["resnet9-airbench94-cifar10"]["images_per_s"]
        assert f"INT8 {_count(int8)} images/s" in sentence, (name, sentence)
        assert f"FP32 {_count(fp32)}" in sentence, (name, sentence)


def test_quoted_checkpoint_size_is_the_benchmarks():
    """The SE-ResNet18 training-time row quotes the state its run writes each epoch as bench_checkpoint measured
    it (last.pt, in MiB)."""
    measured = json.loads((RESULTS / "checkpoint-epyc-zen3.json").read_text(encoding="utf-8"))
    mib = measured["recipes"]["se_resnet18_gpu"]["checkpoint_mb"]
    row = next(line for line in _card_section("se-resnet18-cifar10").splitlines() if "| training time |" in line)
    assert f"{round(mib)} MiB" in row, row


@pytest.mark.parametrize("report", ["wrn-16-4-cifar10", "se-resnet18-cifar10"])
def test_per_epoch_figures_match_the_shipped_history(report):
    """The best epoch and its top-1 are the shipped history's; where that history stops before the recipe's last
    epoch (a report drawn from best.pt), the card says where it ends, so the later epochs it quotes are not
    taken for the repository's."""
    history = json.loads((ROOT / "models/reports" / report / "history.json").read_text(encoding="utf-8"))
    top1 = [round(epoch["val_top1"] * 100, 2) for epoch in history]
    best = max(top1)
    section = _card_section(report)
    assert f"best {best:.2f} at epoch {top1.index(best) + 1}" in section
    recipe_epochs = re.search(r"with `--set epochs=(\d+)`", section)
    assert recipe_epochs, f"{report}: the card's recipe row gives no epoch count"
    epochs = int(recipe_epochs.group(1))
    if len(history) < epochs:
        assert f"ends at epoch {len(history)}" in section, f"{report}: history ends at {len(history)} of {epochs}"


def test_cutout_area_quoted_is_the_codes():
    """docs/fast-training.md and the recipe say Cutout 12 covers about 118 pixels of a 32x32 image on average
    (the square's centre anywhere, clipped at the border): the code's own masks, averaged over 8,192 images."""
    import torch

    from training.data.augment import cutout

    cut = cutout(torch.ones(8192, 1, 32, 32, dtype=torch.uint8), 12, torch.Generator().manual_seed(0))
    mean_area = (cut == 0).sum().item() / len(cut)
    assert abs(mean_area - 118) < 1.5, mean_area  # exactly 10.875 squared over every centre
    doc = (ROOT / "docs/fast-training.md").read_text(encoding="utf-8")
    recipe = (ROOT / "training/recipes/resnet9_half_cpu.yaml").read_text(encoding="utf-8")
    assert "about 118 pixels on average, not 144" in doc
    assert "about 118 pixels on average, not 144" in recipe


@pytest.mark.parametrize("recipe", ["airbench94_cpu", "airbench94_muon"])
def test_batchnorm_horizon_quoted_is_the_recipes(recipe):
    """Each micro-batch's forward moves BatchNorm's running statistics at airbench's momentum, so they average
    over about micro_batch / momentum images, not batch / momentum as one forward per step would: the figures the
    recipe's comment and docs/fast-training.md quote."""
    from training.config_recipes import build_config
    from training.models.airbench import FAST_BN_MOMENTUM

    config = build_config(recipe, [])
    micro, batch = config.train.micro_batch_size, config.train.batch_size
    assert micro and micro < batch
    ours, paper = _count(micro / FAST_BN_MOMENTUM), _count(batch / FAST_BN_MOMENTUM)
    doc = (ROOT / "docs/fast-training.md").read_text(encoding="utf-8")
    comment = (ROOT / f"training/recipes/{recipe}.yaml").read_text(encoding="utf-8")
    for text in (" ".join(doc.split()), " ".join(re.sub(r"^#", "", comment, flags=re.MULTILINE).split())):
        assert f"about {ours} " in text or f"about the last {ours} " in text, (recipe, ours)
        assert paper in text, (recipe, paper)

"""Ablations: train every combination of a few settings and tabulate them against the first.

``--vary use_se=true,false --vary dropout=0.5,0`` gives four variants (the cartesian product, the
first ``--vary`` outermost); the first variant, every first value, is the baseline. ``--step`` instead
adds methods one at a time (each step keeps the settings of the steps before it), as the fast-training
papers tabulate them, and ``--tta`` adds a last row: the last variant evaluated with test-time
augmentation. Each variant is a run folder under the ablation folder, so re-running the command skips
finished variants and resumes an interrupted one from its last.pt.
"""

from __future__ import annotations

import itertools
import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from inference.errors import UsageError
from inference.files import write_text_atomic

from ..checkpoint import BEST_FILE, ENSEMBLE_RUN_FILE, LAST_FILE, SUMMARY_FILE
from ..config import Config, ConfigError
from ..config_overrides import check_distinct
from ..config_recipes import check_recipe
from ..data import DATASETS
from ..engine import train
from ..inference import check_tta
from ..preflight import buildable_config, check_out_of_the_data, warned_once
from ..resume import resume
from .ablate_folders import ABLATION_FILE, _standing, check_same_ablation, check_variant_folder, check_variants
from .ablate_rows import _class_deltas, _paired, _row, common_sample_count, largest_class_changes
from .ablate_table import format_table
from .ablate_variants import check_distinct_variants, parse_steps, parse_vary, run_kind, variant_dir_name
from .metrics import compute_metrics
from .predictions import read_json
from .report_folder import check_own_folder
from .samples import DataSpec, sample_fingerprint
from .sources import check_finite, load_model

log = logging.getLogger("training.reports")


def run_variant(run_dir: Path, config: Config) -> str:
    """Train, resume or skip one variant; returns which it did."""
    check_variant_folder(run_dir, config)
    standing = _standing(run_dir)
    if standing == "finished":
        return "finished earlier"
    if standing == "started":
        log.info("resuming %s", run_dir)
        resume(run_dir, expected=config)  # its last.pt's own configuration, where config.yaml is gone
        return "resumed"
    train(config, run_dir)
    return "trained"


def _data_spec(config: Config, split: str) -> DataSpec:
    d = config.data
    if split in ("val",) and d.val_size == 0:
        other = " or pass --split test" if DATASETS.get(d.dataset).has_test else ""
        raise UsageError(f"the ablation's runs have no validation split (val_size=0): set val_size{other}")
    if split == "test" and not DATASETS.get(d.dataset).has_test:
        # evaluate's advice (--data at a test folder) names an option the ablation has not: it reads its runs' data
        raise UsageError(
            f"a {d.dataset} dataset has no separate test split, and an ablation evaluates its runs on their own data: "
            "use --split val (their held-out images, the default)"
        )
    return DataSpec(d.dataset, d.root, split, d.val_size, d.split_seed, d.image_size, d.cache_dir, d.fit)


def _eval_data(spec: DataSpec, loaded: dict[tuple, tuple]) -> tuple[Any, str]:
    """The evaluation split and its fingerprint, loaded once per distinct DataSpec."""
    key = tuple(sorted(vars(spec).items()))
    if key not in loaded:
        data = spec.load()
        loaded[key] = (data, sample_fingerprint(data))
    return loaded[key]


def ablate(
    recipe: str,
    vary: list[str],
    sets: list[str] | None = None,
    out: str | Path | None = None,
    split: str = "val",
    batch_size: int = 256,
    device: str = "auto",
    steps: list[list[str]] | None = None,
    tta: str = "none",
    target_top1: float | None = None,
) -> dict[str, Any]:
    """``target_top1`` (a fraction): also report each run's first epoch whose validation top-1 reached it."""
    if target_top1 is not None and not 0 < target_top1 <= 1:
        raise ValueError(f"target top-1 {target_top1} is not a fraction in (0, 1]")
    if steps and vary:
        raise UsageError("give either --vary (every combination) or --step (methods added one by one), not both")
    # the ablation's own mistake, not its first variant's
    check_recipe(recipe)
    sets = list(sets or [])
    if steps:
        axes, labelled = [], parse_steps(steps)
        labels, combos = [label for label, _ in labelled], [combo for _, combo in labelled]
    else:
        axes = parse_vary(vary)
        combos = [
            [f"{key}={value}" for key, value in zip([k for k, _ in axes], values)]
            for values in itertools.product(*[v for _, v in axes])
        ]
        labels = [" ".join(combo) for combo in combos]
        # a key both fixed by --set and varied takes the varied values in every variant: the --set is a mistake
        # (a step may change what --set gave the steps before it)
        for combo in combos:  # each variant's values: a preset varied is its fields, not the whole section
            try:
                check_distinct(sets + combo)
            except ConfigError as exc:
                raise ConfigError(f"{exc} (--vary's values come after every --set: drop that --set)") from None
    check_tta(tta)
    # Build every config, and its network, before training anything: a typo fails at once, not after hours.
    configs = []
    kind = run_kind(bool(steps))  # as its progress, refusals and warnings name each run
    with warned_once(kind) as built:  # a warning every variant gets is said once, not once each
        for label, combo in zip(labels, combos):
            configs.append(buildable_config(recipe, sets + combo, f"{kind} {label!r}", built))
    names = [variant_dir_name([label] if steps else combo) for label, combo in zip(labels, combos)]
    check_distinct_variants(configs, labels, names, bool(steps))
    out_dir = Path(out) if out else Path("runs") / f"ablate-{configs[0].recipe}"
    what = {
        "recipe": configs[0].recipe,
        "vary": [{"key": k, "values": v} for k, v in axes],
        "set": sets,
        "steps": [{"label": label, "settings": combo} for label, combo in zip(labels, combos)] if steps else [],
    }
    # Its table and its variants' run folders: not among a run's or someone's files. An ablation's own folder,
    # even one stopped before its table (variant folders only), is reused: the re-run skips finished variants.
    check_own_folder(
        out_dir, "ablation", ABLATION_FILE, (LAST_FILE, BEST_FILE, SUMMARY_FILE, ENSEMBLE_RUN_FILE), files_only=True
    )
    check_same_ablation(out_dir, what)
    for config in configs:  # the variants' run folders go in it, each trained on its own data.root (if varied)
        check_out_of_the_data(config, out_dir)
    loaded: dict[tuple, tuple] = {}
    folders = [out_dir / name for name in names]
    # reading each variant's evaluation split and checking its training split warn of the same split: said once
    with warned_once(kind) as warned:
        for label, config in zip(labels, configs):  # so does a missing or unknown split
            with warned.of(f"{kind} {label!r}"):
                _eval_data(_data_spec(config, split), loaded)
        check_variants(folders, configs, labels, warned, kind)
    out_dir.mkdir(parents=True, exist_ok=True)

    rows: list[dict[str, Any]] = []
    for index, (label, combo, config, run_dir) in enumerate(
        tqdm(list(zip(labels, combos, configs, folders)), desc="ablation", unit=kind)
    ):
        log.info("%s %d/%d: %s", kind, index + 1, len(combos), label)
        started = time.perf_counter()
        # each variant's training builds its configuration and reads and splits the data, as the checks did
        with built.not_again(f"{kind} {label!r}"), warned.not_again(f"{kind} {label!r}"):
            status = run_variant(run_dir, config)
        wall = time.perf_counter() - started
        summary = read_json(run_dir / SUMMARY_FILE)

        data, fingerprint = _eval_data(_data_spec(config, split), loaded)
        source = load_model(checkpoint=run_dir / BEST_FILE, device=device)
        history = read_json(run_dir / "history.json") if (run_dir / "history.json").is_file() else []
        views = ["none"] + ([tta] if tta != "none" and index == len(combos) - 1 else [])
        for view in views:
            logits, _ = source.predict(data, view, batch_size)
            # as evaluate refuses it: a row of NaN loss and an arbitrary top-1 would pass for a variant's result
            check_finite(source, logits)
            metrics = compute_metrics(logits, data.labels, source.classes)
            rows.append(
                _row(
                    label if view == "none" else f"+ {view} TTA",
                    combo,
                    run_dir,
                    index,
                    status,
                    metrics,
                    summary,
                    history,
                    wall,
                    source,
                    fingerprint,
                    logits,
                    data.labels,
                    view,
                    target_top1,
                )
            )
    base = rows[0]
    for row in rows:
        deltas = _class_deltas(base, row)
        row["top1_diff_points"] = 100 * (row["top1"] - base["top1"])
        row["loss_diff"] = row["loss"] - base["loss"]
        row["per_class_mean_diff_points"] = 100 * float(np.mean(list(deltas.values()))) if deltas else None
        row["largest_class_gain"], row["largest_class_loss"] = largest_class_changes(deltas)
        row["mcnemar_vs_baseline"], row["diff_interval_vs_baseline"] = _paired(base, row)
    # Steps are cumulative, so each method's own effect is its row against the row above (for the TTA row:
    # the same checkpoint without TTA), not against the baseline.
    for previous, row in zip([None, *rows[:-1]], rows):
        if steps and previous is not None:
            test, interval = _paired(previous, row)
            row["vs_previous"] = {
                "variant": previous["variant"],
                "top1_diff_points": 100 * (row["top1"] - previous["top1"]),
                "mcnemar": test,
                "diff_interval": interval,
            }
        else:
            row["vs_previous"] = None
    for row in rows:
        del row["_correct"]

    result = {
        **what,
        "tta": tta,
        "split": split,
        "target_top1": target_top1,
        "num_samples": common_sample_count(rows),
        "variants": rows,
    }
    write_text_atomic(out_dir / ABLATION_FILE, json.dumps(result, indent=2))
    write_text_atomic(out_dir / "ablation.md", format_table(result))
    result["out_dir"] = str(out_dir)
    return result

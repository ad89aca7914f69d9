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
import re
import time
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from tqdm import tqdm

from inference.errors import UsageError
from inference.files import write_text_atomic
from inference.messages import counted, markdown_cell

from ..checkpoint import BEST_FILE, CONFIG_FILE, ENSEMBLE_RUN_FILE, LAST_FILE, SUMMARY_FILE
from ..config import Config, ConfigError, check_distinct, read_yaml, yaml_problem
from ..engine import train
from ..inference import check_tta
from ..models import count_parameters
from ..preflight import buildable_config, check_out_of_the_data, check_run_lengths
from ..resume import resume
from .metrics import PAIRED_INTERVAL_METHOD, compute_metrics, mcnemar, paired_difference_interval
from .predictions import read_json
from .report_folder import check_own_folder
from .samples import DataSpec, sample_fingerprint
from .sources import check_finite, load_model

log = logging.getLogger("training.reports")

CONFIDENCE = 0.95
ABLATION_FILE = "ablation.json"


def split_values(text: str) -> list[str]:
    """Split on commas outside brackets, so ``milestones=[30,60],[50]`` gives two values."""
    values, depth, current = [], 0, ""
    for ch in text:
        depth += ch in "[{"
        depth -= ch in "]}"
        if ch == "," and depth == 0:
            values.append(current.strip())
            current = ""
        else:
            current += ch
    values.append(current.strip())
    return values


def parse_vary(items: list[str]) -> list[tuple[str, list[str]]]:
    axes: list[tuple[str, list[str]]] = []
    for item in items:
        if "=" not in item:
            raise UsageError(f"--vary {item!r} is not KEY=V1,V2,...")
        key, text = item.split("=", 1)
        values = split_values(text)
        if not key or not all(values):
            raise UsageError(f"--vary {item!r}: empty key or value")
        if len(set(values)) != len(values):
            raise UsageError(f"--vary {item!r} repeats a value")
        if len(values) < 2:  # nothing to compare: a setting every variant shares is --set's job
            raise UsageError(f"--vary {item!r} gives one value: vary it over two or more, or pass --set {item}")
        if key in {k for k, _ in axes}:
            raise UsageError(f"--vary {key} is given twice: list all its values in one --vary")
        axes.append((key, values))
    if not axes:
        raise UsageError("give at least one --vary KEY=V1,V2 (or --step LABEL KEY=VALUE ...)")
    return axes


def parse_steps(steps: list[list[str]]) -> list[tuple[str, list[str]]]:
    """``[[LABEL, KEY=VALUE, ...], ...]`` -> cumulative (label, assignments): each step adds to the one before."""
    out: list[tuple[str, list[str]]] = []
    accumulated: list[str] = []
    for step in steps:
        if not step or "=" in step[0]:
            raise UsageError(f"--step {' '.join(step)!r}: start with a label, then KEY=VALUE settings")
        bad = [a for a in step[1:] if "=" not in a]
        if bad:
            raise UsageError(f"--step {step[0]}: {bad[0]!r} is not KEY=VALUE")
        if step[0] in {label for label, _ in out}:
            raise UsageError(f"--step label {step[0]!r} is used twice")
        accumulated = accumulated + step[1:]
        out.append((step[0], accumulated))
    return out


def variant_dir_name(assignments: list[str]) -> str:
    return "__".join(re.sub(r"[^A-Za-z0-9._-]+", "_", a.replace("=", "-")) for a in assignments)


def check_distinct_variants(configs: list[Config], labels: list[str], names: list[str], stepped: bool) -> None:
    """Refuse, before any trains, two variants that would train the same run (a step whose settings change nothing,
    values that spell one setting twice: its row would repeat the other's and pass for a measured +0.00), and two
    whose run folders are one (labels that differ only in characters a folder's name drops)."""
    kind = "step" if stepped else "variant"
    dumps = [config.model_dump(mode="json") for config in configs]
    for i, dump in enumerate(dumps):
        twin = next((j for j in range(i) if dumps[j] == dump), None)
        if twin is not None:
            change = "its settings change nothing from" if stepped and twin == i - 1 else "it trains the same run as"
            raise UsageError(
                f"{kind} {labels[i]!r}: {change} {kind} {labels[twin]!r}, so its row would only repeat that one's: "
                f"drop it, or give it settings that change the run"
            )
    for i, name in enumerate(names):
        if name.strip(".") == "":  # the ablation's own folder, or the one above it
            raise UsageError(f"{kind} label {labels[i]!r} names no folder of its own: give it letters or digits")
        twin = next((j for j in range(i) if names[j] == name), None)
        if twin is not None:
            raise UsageError(
                f"{kind}s {labels[twin]!r} and {labels[i]!r} would share the run folder {name!r} (a folder's name "
                "keeps letters, digits, '.', '_' and '-'): give them labels that differ in those"
            )


def _same_config(run_dir: Path, config: Config) -> bool:
    saved = run_dir / CONFIG_FILE
    return not saved.is_file() or _saved_config(saved) == config.model_dump(mode="json")


def _saved_config(saved: Path) -> Any:
    """A variant folder's config.yaml as written; one that cannot be read (damaged, edited wrong, another
    encoding) is refused naming it: whether the run beside it is this variant's cannot be told."""
    try:
        return read_yaml(saved.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise UsageError(
            f"{saved} cannot be read ({_unreadable(exc)}), so whether the run beside it is this variant's cannot "
            "be told: use another --out or remove that folder"
        ) from None


def _unreadable(exc: OSError | UnicodeDecodeError | yaml.YAMLError) -> str:
    if isinstance(exc, OSError):
        return exc.strerror or type(exc).__name__
    if isinstance(exc, UnicodeDecodeError):
        return "it is not UTF-8 text"
    return yaml_problem(exc)


def _standing(run_dir: Path) -> str:
    """What the variant's folder holds: a "finished" run, one "started", or "none"."""
    started = (run_dir / LAST_FILE).is_file()
    # what is evaluated is best.pt: a finished variant whose last.pt was deleted to save space is not retrained
    if (run_dir / SUMMARY_FILE).is_file() and (started or (run_dir / BEST_FILE).is_file()):
        return "finished"
    return "started" if started else "none"


def check_variant_folder(run_dir: Path, config: Config) -> None:
    """Refuse a variant's folder that holds a run of another configuration."""
    if _standing(run_dir) != "none" and not _same_config(run_dir, config):
        raise UsageError(f"{run_dir} holds a run with a different configuration: use another --out or remove it")


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


def check_variants(folders: list[Path], configs: list[Config], labels: list[str]) -> None:
    """What would refuse a variant once the ones before it had trained, refused before the first trains: a folder
    holding a run of another configuration, and the refusals that need the training images (data no classifier
    can learn from, a batch larger than the split, a lookahead period longer than the run). A variant started
    or finished earlier has passed the latter."""
    for folder, config in zip(folders, configs):
        check_variant_folder(folder, config)
    new = [i for i, folder in enumerate(folders) if _standing(folder) == "none"]
    check_run_lengths([configs[i] for i in new], [f"variant {labels[i]!r}" for i in new])


def check_same_ablation(out_dir: Path, what: dict[str, Any]) -> None:
    """Refuse a folder whose table is another ablation's (another recipe, other variants or other --set): this one
    would replace it without a word. The same ablation, re-run, resumes; so does one evaluated anew (another
    --split, --tta or --target-top1), whose runs are the same, and one that extends it (more values of the same
    keys, more steps), whose table keeps every row of the earlier one."""
    record = out_dir / ABLATION_FILE
    if not record.is_file():
        return
    theirs = _recorded_ablation(record)
    mine = _identity(what)
    if theirs[0] == mine[0] and theirs[2] == mine[2] and theirs[3] <= mine[3]:
        return
    recipe, varied, fixed, _ = theirs
    if (recipe, varied) == mine[:2]:
        said = f"the same variants with other --set ({' '.join(fixed) or 'none'})"
    else:
        said = f"{recipe}, {'steps' if varied[0] == 'steps' else 'varying'} {varied[1]}"
    raise UsageError(
        f"{out_dir} holds another ablation ({said}), whose table this one would replace: give this one its own "
        "folder with --out, or remove that one first"
    )


Identity = tuple[str, tuple[str, str], tuple[str, ...], frozenset[object]]


def _identity(what: dict[str, Any]) -> Identity:
    """An ablation as far as its runs go: its recipe, what it varies (as its table's first line says it), its
    --set, in any order (``check_distinct`` has refused a key set twice), and its variants, each as the settings
    that make it (in any order: one run whatever their order)."""
    variants: frozenset[object]
    if what["steps"]:
        varied = ("steps", "; ".join(f"{st['label']}: {' '.join(st['settings']) or '-'}" for st in what["steps"]))
        variants = frozenset((st["label"], frozenset(st["settings"])) for st in what["steps"])
    else:
        varied = ("vary", ", ".join(f"{v['key']} = {' / '.join(v['values'])}" for v in what["vary"]))
        keys = [v["key"] for v in what["vary"]]
        combos = itertools.product(*(v["values"] for v in what["vary"]))
        variants = frozenset(frozenset(zip(keys, combo)) for combo in combos)
    return what["recipe"], varied, tuple(sorted(what["set"])), variants


def _recorded_ablation(record: Path) -> Identity:
    """What ablation ``record`` (an ablation.json) tabulates; one that cannot be read is refused naming it: whether
    its folder holds this ablation cannot be told."""
    try:
        data = json.loads(record.read_text(encoding="utf-8"))
        return _identity(
            {
                "recipe": str(data["recipe"]),
                "vary": [{"key": str(v["key"]), "values": [str(x) for x in v["values"]]} for v in data["vary"]],
                "set": [str(s) for s in data["set"] or []],
                "steps": [
                    {"label": str(st["label"]), "settings": [str(x) for x in st["settings"]]}
                    for st in data.get("steps") or []
                ],
            }
        )
    except (OSError, ValueError, KeyError, TypeError) as exc:  # ValueError: also bytes that are not UTF-8
        raise UsageError(
            f"{record} cannot be read ({_record_problem(exc)}), so whether its folder holds this ablation cannot be "
            "told: use another --out or remove that folder"
        ) from None


def _record_problem(exc: Exception) -> str:
    if isinstance(exc, OSError):
        return exc.strerror or type(exc).__name__
    if isinstance(exc, UnicodeDecodeError):
        return "it is not UTF-8 text"
    if isinstance(exc, json.JSONDecodeError):
        return "it is not valid JSON"
    return "it is not an ablation's record"


def _data_spec(config: Config, split: str) -> DataSpec:
    d = config.data
    if split in ("val",) and d.val_size == 0:
        other = "" if d.dataset == "folder" else " or pass --split test"  # a folder dataset has no test split
        raise UsageError(f"the ablation's runs have no validation split (val_size=0): set val_size{other}")
    if split == "test" and d.dataset == "folder":
        # evaluate's advice (--data at a test folder) names an option the ablation has not: it reads its runs' data
        raise UsageError(
            "a folder dataset has no separate test split, and an ablation evaluates its runs on their own data: "
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
    configs = [buildable_config(recipe, sets + combo, f"variant {label!r}") for label, combo in zip(labels, combos)]
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
    for config in configs:  # so does a missing or unknown split
        _eval_data(_data_spec(config, split), loaded)
    folders = [out_dir / name for name in names]
    check_variants(folders, configs, labels)
    out_dir.mkdir(parents=True, exist_ok=True)

    rows: list[dict[str, Any]] = []
    for index, (label, combo, config, run_dir) in enumerate(
        tqdm(list(zip(labels, combos, configs, folders)), desc="ablation", unit="variant")
    ):
        log.info("variant %d/%d: %s", index + 1, len(combos), label)
        started = time.perf_counter()
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


def _row(
    label: str,
    combo: list[str],
    run_dir: Path,
    index: int,
    status: str,
    metrics: dict,
    summary: dict,
    history: list[dict],
    wall: float,
    source: Any,
    fingerprint: str,
    logits: np.ndarray,
    labels: np.ndarray,
    tta: str,
    target_top1: float | None,
) -> dict[str, Any]:
    return {
        "variant": label,
        "settings": dict(s.split("=", 1) for s in combo),
        "run": str(run_dir),
        "tta": tta,
        "baseline": index == 0 and tta == "none",
        "status": status,
        "top1": metrics["top1"],
        "top5": metrics["top5"],
        "loss": metrics["loss"],
        "mean_per_class_accuracy": metrics["mean_per_class_accuracy"],
        "per_class_accuracy": {c["class"]: c["accuracy"] for c in metrics["per_class"]},
        "epochs": summary.get("epochs_run"),
        "best_epoch": summary.get("best", {}).get("epoch"),
        # per-epoch figures are without TTA, so a TTA row has none of its own
        "epochs_to_target": epochs_to_reach(history, target_top1) if tta == "none" else None,
        "train_time_s": summary.get("train_time_s", sum(h.get("train_time_s", 0) for h in history)),
        "wall_time_this_call_s": wall,
        "parameters": count_parameters(source.model),
        "fingerprint": fingerprint,
        "num_samples": int(len(labels)),
        "_correct": logits.argmax(1) == labels,
    }


def _class_deltas(base: dict[str, Any], row: dict[str, Any]) -> dict[str, float]:
    """Each class's accuracy change from the baseline, for the classes both rows measured."""
    ours, theirs = row["per_class_accuracy"], base["per_class_accuracy"]
    return {c: ours[c] - theirs[c] for c in ours if ours[c] is not None and theirs.get(c) is not None}


def largest_class_changes(deltas: dict[str, float]) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """The class that gained most and the one that lost most; None for a side no class is on (a +0.0 is no gain)."""
    gain = max(deltas, key=deltas.__getitem__, default=None)
    loss = min(deltas, key=deltas.__getitem__, default=None)
    return (
        {"class": gain, "points": 100 * deltas[gain]} if gain is not None and deltas[gain] > 0 else None,
        {"class": loss, "points": 100 * deltas[loss]} if loss is not None and deltas[loss] < 0 else None,
    )


def common_sample_count(rows: list[dict[str, Any]]) -> int | None:
    """The number of images every row was evaluated on; None where variants differ in data (each row has its own)."""
    counts = {row["num_samples"] for row in rows}
    return counts.pop() if len(counts) == 1 else None


def _paired(a: dict[str, Any], b: dict[str, Any]) -> tuple[dict[str, Any] | None, dict[str, float] | None]:
    """McNemar's test and the 95% interval of B's accuracy minus A's (points), where both rows were
    evaluated on the same samples; (None, None) for a row against itself or on other samples."""
    if a is b or a["fingerprint"] != b["fingerprint"]:
        return None, None
    low, high = paired_difference_interval(a["_correct"], b["_correct"], CONFIDENCE)
    return mcnemar(a["_correct"], b["_correct"]), {"confidence": CONFIDENCE, "low": 100 * low, "high": 100 * high}


def _interval_text(interval: dict[str, float] | None) -> str:
    return "" if interval is None else f"{interval['low']:+.2f} .. {interval['high']:+.2f}"


def epochs_to_reach(history: list[dict], target_top1: float | None) -> int | None:
    """The first epoch whose validation top-1 (the training run's own, without TTA) reached the target."""
    if target_top1 is None:
        return None
    # The target comes as a percentage divided by 100 (89.34 -> 0.8934000000000001): an accuracy equal to it counts.
    reached = target_top1 - 1e-9
    return next((h["epoch"] for h in history if h.get("val_top1") is not None and h["val_top1"] >= reached), None)


def _epochs_to_text(row: dict[str, Any]) -> str:
    if row["tta"] != "none":
        return ""
    return "not reached" if row["epochs_to_target"] is None else str(row["epochs_to_target"])


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def _samples_text(rows: list[dict[str, Any]]) -> str:
    """The images the rows were evaluated on: one count where they share them, each variant's own where not."""
    if len({row["fingerprint"] for row in rows}) == 1:
        return f"({counted(rows[0]['num_samples'], 'image')})"
    variants = [row for row in rows if row["tta"] == "none"]  # a TTA row reads its variant's images
    if common_sample_count(variants) is not None:
        return f"of each variant's own data ({counted(variants[0]['num_samples'], 'image')} each, not the same ones)"
    return (
        "of each variant's own data ("
        + "; ".join(f"{r['variant']}: {counted(r['num_samples'], 'image')}" for r in variants)
        + ")"
    )


def _unpaired_note(rows: list[dict[str, Any]]) -> str:
    # McNemar's test and the paired interval need one set of images: _paired leaves them out across data
    if len({row["fingerprint"] for row in rows}) == 1:
        return ""
    return (
        " A row evaluated on other images than the row it is tested against has no p or interval: its top-1 "
        "difference mixes the models' change with the images' and is not paired."
    )


def _class_change_text(row: dict[str, Any], change: dict[str, Any] | None) -> str:
    if row["baseline"] or row["per_class_mean_diff_points"] is None:
        return ""
    return "none" if change is None else f"{change['class']} {change['points']:+.1f}"


def format_table(result: dict[str, Any]) -> str:
    stepped = bool(result.get("steps"))
    target = result.get("target_top1")
    lines = [
        f"# Ablation of `{result['recipe']}`",
        "",
        (
            f"Varied: {', '.join(v['key'] + ' = ' + ' / '.join(v['values']) for v in result['vary'])}"
            if result["vary"]
            else "Methods added one by one (each row keeps the settings of the rows above): "
            + "; ".join(
                f"{st['label']}: {' '.join(st['settings'][len(prev['settings']) if prev else 0 :]) or '-'}"
                for prev, st in zip([None] + result.get("steps", [])[:-1], result.get("steps", []))
            )
        )
        + (f"; fixed: {' '.join(result['set'])}" if result["set"] else "")
        + ".",
        f"Each run's best.pt evaluated on the {result['split']} split {_samples_text(result['variants'])}"
        + (", the split best.pt was selected on" if result["split"] == "val" else "")
        + "; the first row is the baseline."
        + _unpaired_note(result["variants"]),
        "Per-class diff is the mean over classes of the per-class accuracy change (points); "
        f"p is McNemar's test vs the baseline; the 95% interval is the paired ({PAIRED_INTERVAL_METHOD}) interval "
        f"of the top-1 difference in points, from the {result['split']} samples alone (the noise between training "
        "runs is not in it)."
        + (
            " The row-above columns test each step against the row before it (for the TTA row: the same "
            "checkpoint without TTA)."
            if stepped
            else ""
        )
        + (
            f" Epochs to {100 * target:g}%: the first epoch whose validation top-1 (each run's history, "
            "without TTA) reached it."
            if target is not None
            else ""
        ),
        "",
        "| variant | top-1 | diff | 95% interval | loss | per-class diff | p vs baseline | "
        + ("gain vs row above | its 95% interval | its p | " if stepped else "")
        + "largest class gain | largest class loss | epochs | "
        + (f"epochs to {100 * target:g}% | " if target is not None else "")
        + "train time | params |",
    ]
    lines.append("|" + "---|" * (lines[-1].count("|") - 1))
    for row in result["variants"]:
        test = row["mcnemar_vs_baseline"]
        previous = row.get("vs_previous")
        per_class = row["per_class_mean_diff_points"]
        cells = [
            row["variant"] + (" (baseline)" if row["baseline"] else ""),
            f"{100 * row['top1']:.2f}%",
            f"{row['top1_diff_points']:+.2f}",
            _interval_text(row.get("diff_interval_vs_baseline")),
            f"{row['loss']:.4f}",
            "" if per_class is None else f"{per_class:+.2f}",
            "" if test is None else f"{test['p_value']:.3g}",
        ]
        if stepped:
            cells += [
                "" if previous is None else f"{previous['top1_diff_points']:+.2f}",
                "" if previous is None else _interval_text(previous["diff_interval"]),
                "" if previous is None or previous["mcnemar"] is None else f"{previous['mcnemar']['p_value']:.3g}",
            ]
        cells += [
            _class_change_text(row, row["largest_class_gain"]),
            _class_change_text(row, row["largest_class_loss"]),
            str(row["epochs"]),
            *([_epochs_to_text(row)] if target is not None else []),
            _duration(row["train_time_s"]),
            f"{row['parameters']:,}",
        ]
        lines.append("| " + " | ".join(map(markdown_cell, cells)) + " |")
    return "\n".join(lines) + "\n"

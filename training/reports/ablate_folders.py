"""Whether an ablation's folder and its variants' run folders hold this ablation's runs: re-running the command
resumes only where they do, and refuses, before anything trains, a folder that holds another configuration's run or
another ablation's table."""

from __future__ import annotations

import itertools
import json
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import yaml

from inference.errors import UsageError

from ..checkpoint import BEST_FILE, CONFIG_FILE, LAST_FILE, SUMMARY_FILE
from ..config import Config
from ..config_yaml import read_yaml, yaml_problem
from ..preflight import WarnedOnce, check_run_lengths, warned_once

ABLATION_FILE = "ablation.json"


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
            f"{saved} cannot be read ({_unreadable(exc)}), so whether the run beside it is this ablation's cannot "
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


def check_variants(
    folders: list[Path],
    configs: list[Config],
    labels: list[str],
    warned: WarnedOnce | None = None,
    kind: str = "variant",
) -> None:
    """What would refuse a variant once the ones before it had trained, refused before the first trains: a folder
    holding a run of another configuration, and the refusals that need the training images (data no classifier
    can learn from, a batch larger than the split, a lookahead period longer than the run). A variant started
    or finished earlier has passed the latter. ``warned``: where the variants' warnings are held, to be said
    once for all (``preflight.WarnedOnce``); ``kind``: the word a refusal or a warning names a variant by ("step"
    in a stepped ablation)."""
    for folder, config in zip(folders, configs):
        check_variant_folder(folder, config)
    new = [i for i, folder in enumerate(folders) if _standing(folder) == "none"]
    with warned_once(kind) if warned is None else nullcontext(warned) as held:
        check_run_lengths([configs[i] for i in new], [f"{kind} {labels[i]!r}" for i in new], held)


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
        runs = "steps" if varied[0] == "steps" else "variants"  # as a stepped ablation names its runs
        said = f"the same {runs} with other --set ({' '.join(fixed) or 'none'})"
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

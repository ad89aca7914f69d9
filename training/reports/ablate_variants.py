"""An ablation's variants from its command line: ``--vary``'s values and ``--step``'s settings, each variant's run
folder name, and the refusal of two variants that would be one run, before any trains."""

from __future__ import annotations

import re

from inference.errors import UsageError

from ..config import Config


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


def run_kind(stepped: bool) -> str:
    """The word an ablation's runs are named by, in its progress, warnings and refusals: --step's are steps."""
    return "step" if stepped else "variant"


def check_distinct_variants(configs: list[Config], labels: list[str], names: list[str], stepped: bool) -> None:
    """Refuse, before any trains, two variants that would train the same run (a step whose settings change nothing,
    values that spell one setting twice: its row would repeat the other's and pass for a measured +0.00), and two
    whose run folders are one (labels that differ only in characters a folder's name drops)."""
    kind = run_kind(stepped)
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

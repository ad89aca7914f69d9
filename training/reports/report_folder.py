"""Where a report is written: its default folder; the refusal of a folder that is not a report's own (a training
run's, another model's report, someone's files); and the folder made for a report, taken away again when the
report never got written into it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from inference.errors import UsageError
from inference.files import file_in_the_way, folders_to_make, remove_if_empty

from ..checkpoint import BEST_FILE, LAST_FILE, SUMMARY_FILE, checkpoint_file
from .predictions import METRICS_FILE, PREDICTIONS_FILE
from .sources import ModelSource


def default_out_dir(source: ModelSource, split: str, tta: str) -> Path:
    suffix = f"{split}-tta-{tta}" if tta != "none" else split
    if source.kind == "checkpoint":
        assert source.run_dir is not None  # a checkpoint's source always names its run folder
        return source.run_dir / f"report-{source.path.stem}-{suffix}"
    return Path("reports") / f"{source.path.stem}-{suffix}"


def check_report_out(out: Path, model: str | Path | None = None) -> None:
    """A report folder is a report's own: in a run's folder it would replace the run's history.json and curves
    (and `ensemble` and `compare` would then take the folder for a report, not the run); and the report of
    another ``model`` (a checkpoint or ONNX path) is that model's, whose figures an ensemble or a comparison
    may read."""
    if model is not None:
        check_not_anothers(out, model, f"--out {out}")
    # A report's own folder (even one stopped after its predictions) is rewritten; any other holding files is
    # someone's: its report.md or figures of the same names would be replaced.
    check_own_folder(
        out,
        "report",
        PREDICTIONS_FILE,
        (LAST_FILE, BEST_FILE, SUMMARY_FILE),
        elsewhere=" (by default it goes to a folder inside the run's)",
    )


def check_writable(out: Path, named: str) -> None:
    """Refuse ``out`` (``named`` so in the message) where nothing can be written: a file where it or a folder
    above it would be, a folder this user may not write in, a read-only disk. Said before the evaluation pass,
    which takes minutes over a test set, not when its first file is written."""
    in_the_way = file_in_the_way(out)
    if in_the_way is not None:
        said = "" if in_the_way == out else f"{named}: "  # "--out X: X is a file" would say it twice
        raise UsageError(f"{said}{in_the_way} is a file, not a folder")
    existing = next(p for p in (out.absolute(), *out.absolute().parents) if p.exists())
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UsageError(
            f"{named}: cannot write in {existing} (no permission, or a read-only disk): give --out a folder you "
            "can write to"
        )


def check_own_folder(
    out: Path, kind: str, own_file: str, run_files: tuple[str, ...], files_only: bool = False, elsewhere: str = ""
) -> None:
    """Refuse ``out`` as the folder of a new ``kind`` (a report, an ablation) where it holds a training run (any
    of ``run_files``), or, without the ``own_file`` that marks a ``kind``'s own folder, anything else (files
    only, with ``files_only``): what the ``kind`` writes would be mixed in among those files or replace them."""
    held = [name for name in run_files if (out / name).is_file()]
    if held:
        raise UsageError(
            f"--out {out} holds a training run ({', '.join(held)}): write the {kind} to another folder{elsewhere}"
        )
    if out.is_dir() and not (out / own_file).is_file():
        others = sorted(p.name for p in out.iterdir() if not p.name.startswith(".") and (p.is_file() or not files_only))
        if others:
            raise UsageError(
                f"--out {out} holds files and no {kind} ({', '.join(others[:3])}{', ...' if len(others) > 3 else ''})"
                f": write the {kind} to a new or empty folder"
            )


def check_not_anothers(out: Path, model: str | Path, named: str) -> None:
    reported = _reported_model(out)
    if reported is not None and _same_file(reported, model) is False:
        raise UsageError(
            f"{named} holds the report of another model ({reported}): write this one to another folder (--out), "
            "or delete that report first"
        )


def earlier_report(out: Path) -> str | None:
    """What the report already in ``out`` is of, for the warning that it is replaced: its model and when it was
    made, as its metrics record them, else the report's files it holds (one stopped before its metrics); None
    where ``out`` holds none of them (a new or empty folder)."""
    held = [name for name in ("report.md", METRICS_FILE, PREDICTIONS_FILE) if (out / name).is_file()]
    if not held:
        return None
    metrics = _metrics(out)
    model = _model_in(metrics)
    if model is None:
        return f"its {', '.join(held)}"
    created = metrics.get("created")
    return f"of {model}" + (f", made {created}" if isinstance(created, str) else "")


def _reported_model(out: Path) -> str | None:
    """The model path a report folder's metrics name, or None (no report there, or one that cannot be read)."""
    return _model_in(_metrics(out))


def _metrics(out: Path) -> dict:
    """The report folder's metrics.json; empty where there is none, or one that cannot be read."""
    try:
        metrics = json.loads((out / METRICS_FILE).read_text())
    except (OSError, ValueError):
        return {}
    return metrics if isinstance(metrics, dict) else {}


def _model_in(metrics: dict) -> str | None:
    source = metrics.get("source")
    path = source.get("path") if isinstance(source, dict) else None
    return path if isinstance(path, str) else None


def _same_file(reported: str, model: str | Path) -> bool | None:
    """Whether the report's model and ``model`` are one file or run folder (a run folder's report names its
    best.pt); None when the report's path is not here to tell (a report copied from another machine)."""
    if not Path(reported).exists():
        return None
    return checkpoint_file(reported).resolve() == checkpoint_file(model).resolve()


@contextmanager
def report_folder(out_dir: Path) -> Iterator[None]:
    """``out_dir`` made, with the parents it lacks, for the body; those made are taken away again when the body
    fails or is stopped before writing in them, so an evaluation that never got to its report leaves no folder."""
    made = folders_to_make(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    try:
        yield
    except BaseException:
        remove_if_empty(made)
        raise

"""Continuing a run from its run folder: the newest whole checkpoint of it, the configuration it started with (where it
runs and its epoch count aside), and the advice where there is nothing to continue from."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch
import yaml

from inference.files import write_text_atomic
from inference.messages import counted

from . import distributed
from .checkpoint import (
    BEST_FILE,
    CONFIG_FILE,
    EDITED_CONFIG,
    ENSEMBLE_RUN_FILE,
    LAST_FILE,
    CheckpointError,
    claimed_run,
    load_training_state,
    remove_stale_temporaries,
    save_checkpoint,
)
from .config import Config, ConfigError
from .config_overrides import NUMERICS_KEYS, PLACEMENT_KEYS, config_differences, with_placement
from .config_validation import validate_config
from .config_yaml import read_yaml, yaml_problem
from .device import numerics_of, resolve_device
from .engine import Trainer
from .summary import finished_summary, left_to_train, no_better_epoch, patience_exhausted, write_progress

log = logging.getLogger("training")


def sized_to_the_run(config: Config) -> list[str]:
    """What is spread over the whole run, and so changes shape mid-run when its epoch count does. A warmup
    is not: it lasts warmup_epochs whatever the total."""
    sized = []
    if config.schedule.name in ("cosine", "linear", "triangular"):
        sized.append(f"the {config.schedule.name} learning-rate schedule")
    if config.train.lookahead_every:
        sized.append("lookahead's decay ramp")
    if config.train.prune_params().enabled:
        sized.append("InfoBatch pruning's epochs (train.prune_until of them)")
    return sized


def best_to_go_on_from(run: Path) -> str | None:
    """Advice for a run without a usable last.pt (damaged, or missing: killed between writing best.pt and last.pt
    in its first epoch), where its best.pt is whole and holds the training state; None where it is not."""
    try:
        best = load_training_state(run / BEST_FILE)  # not a network alone (an ensemble, a recovered one)
    except (ValueError, FileNotFoundError):
        return None
    over = "over" if (run / LAST_FILE).exists() else "to"
    return f"Its {BEST_FILE} (epoch {best['epoch']}) holds the whole training state too: copy it {over} {LAST_FILE}"


def _nothing_to_resume(run: Path, exc: FileNotFoundError) -> str:
    """What a run folder with no checkpoint at all is: none (a mistyped name), a run stopped before its first
    epoch ended (which writes neither last.pt nor best.pt), or a folder of something else."""
    if not run.exists():
        return f"{exc}: there is no folder {run}"
    if (run / CONFIG_FILE).is_file() and (run.parent / ENSEMBLE_RUN_FILE).is_file():  # an ensemble's member
        return (
            f"{exc}: {run} holds no finished epoch: nothing to resume; it is a member of the ensemble run "
            f"{run.parent}, which `{distributed.training_command('resume', str(run.parent))}` says how to continue"
        )
    if (run / CONFIG_FILE).is_file():  # written as a run starts
        return (
            f"{exc}: {run} holds no finished epoch (a run stopped before its first one ended saves none): nothing "
            "to resume; train again with the same command"
        )
    if run.is_dir():
        return f"{exc}: {run} holds no run (no {CONFIG_FILE} either): give the folder that `train --out` wrote"
    return str(exc)


def _last_or_advice(run: Path) -> dict[str, Any]:
    """The run's last.pt; where it is damaged or missing, the error says what is left to go on from."""
    try:
        return load_training_state(run / LAST_FILE)
    except (ValueError, FileNotFoundError) as exc:
        if isinstance(exc.__cause__, PermissionError):  # the file may be whole: copying over it would lose it
            raise
        advice = best_to_go_on_from(run)
        if advice is None and isinstance(exc, FileNotFoundError):
            raise FileNotFoundError(_nothing_to_resume(run, exc)) from exc
        if advice is None:  # damaged, and no whole best.pt either: only a new run is left
            raise ConfigError(
                f"{exc}; {run} holds no other checkpoint to continue from: start over with `train --force`"
            ) from exc
        raise ConfigError(f"{exc}. {advice} to continue from that epoch, or start over with `train --force`") from exc


def newest_state(run: Path, last: dict[str, Any]) -> dict[str, Any]:
    """``last``, or the run's best.pt where that holds a later epoch of the same run: best.pt is written first, so a
    stop (Ctrl-C, a kill, a full disk) between the two leaves it ahead. Going on from it keeps that epoch rather
    than training it again, which on a GPU or another machine gives other numbers: best.pt would then hold an
    epoch that the run's history and summary do not. last.pt is written over with it, so the two agree again.
    A best.pt of another run (one of the two copied in) is refused: the run would go on beside a best.pt that
    evaluate and export read as its own."""
    try:
        best = load_training_state(run / BEST_FILE)
    except FileNotFoundError:  # written at the run's first best epoch
        return last
    except ValueError as exc:  # damaged, or a network alone: written again at the run's next best epoch
        log.warning(
            "%s; the run goes on from %s and writes %s again at its next best epoch (until then evaluate and export "
            "have no best.pt to read)",
            exc,
            LAST_FILE,
            BEST_FILE,
        )
        return last
    if best["epoch"] > last["epoch"] and same_run(last, best):
        log.warning(
            "%s (epoch %d) is ahead of %s (epoch %d): the run was stopped between writing the two; it goes on from %s",
            run / BEST_FILE,
            best["epoch"],
            run / LAST_FILE,
            last["epoch"],
            BEST_FILE,
        )
        if distributed.is_main_process():  # the one writer of the run folder, as in training
            save_checkpoint(best, run / LAST_FILE)
            write_progress(run, best["history"], best["config"])  # a finished run writes them no more
        return best
    if not same_run(best, last):
        raise CheckpointError(
            f"{run / BEST_FILE} (epoch {best['epoch']}, {best['meta']['arch']}) and {run / LAST_FILE} (epoch "
            f"{last['epoch']}, {last['meta']['arch']}) are of two different runs: one was copied in from another "
            f"folder; move the one that is not this run's out of {run}, then resume"
        )
    return last


def same_run(earlier: dict[str, Any], later: dict[str, Any]) -> bool:
    """Whether checkpoint ``later`` continues the run of ``earlier``: its history goes on from that one's, on the
    same data and settings (but for where it runs and an epoch count a resume changed)."""
    done = len(earlier["history"])
    # as text: a NaN loss is not equal to itself
    if json.dumps(later["history"][:done], sort_keys=True) != json.dumps(earlier["history"], sort_keys=True):
        return False
    before, after = _run_settings(earlier), _run_settings(later)
    # a setting only one of them names came with another version of this code, which wrote it at its default
    return all(before[key] == after[key] for key in before.keys() & after.keys())


def _run_settings(ckpt: dict[str, Any]) -> dict[str, Any]:
    """What a checkpoint's run trained with, its placement and epoch count left out (``same_run``)."""
    config = ckpt["config"]
    free = {*PLACEMENT_KEYS, "train.epochs"}
    settings = {
        f"{section}.{name}": value
        for section, fields in config.items()
        for name, value in (fields.items() if isinstance(fields, dict) else [("", fields)])
        if f"{section}.{name}" not in free
    }
    return {**settings, "data_fingerprint": (ckpt.get("meta") or {}).get("data_fingerprint")}


def keep_edited_config(out_dir: Path, started: Config) -> None:
    """A run's config.yaml edited by hand does not change a resume, which continues the configuration kept in
    last.pt and writes it back to config.yaml: say so, and keep the edited file beside it, not lose it."""
    path = out_dir / CONFIG_FILE
    try:
        text = path.read_text()
    except (FileNotFoundError, UnicodeDecodeError):
        return
    try:
        edited = config_differences(started, validate_config(read_yaml(text), started=True))
    except (yaml.YAMLError, ConfigError, TypeError) as exc:
        why = yaml_problem(exc) if isinstance(exc, yaml.YAMLError) else str(exc).splitlines()[0]
        edited = [f"it no longer reads as a configuration ({why})"]
    if not edited:
        return
    write_text_atomic(out_dir / EDITED_CONFIG, text)
    log.warning(
        "%s was edited since the run started (started -> file: %s): a resume continues the configuration it "
        "started with, kept in last.pt, and config.yaml is written back to it; the edited file is kept as %s. "
        "To train with it, start a new run: python -m training train --recipe %s --out NEW_FOLDER",
        path,
        "; ".join(edited),
        out_dir / EDITED_CONFIG,
        out_dir / EDITED_CONFIG,
    )


def resume(
    out_dir: str | Path,
    epochs: int | None = None,
    expected: Config | None = None,
    placement: list[str] | None = None,
) -> dict[str, Any]:
    """Continue a run from its last.pt with the config it was started with (optionally more epochs). With
    ``expected``, a run started with any other config is refused (ConfigError naming the differences), but for
    where it runs (``PLACEMENT_KEYS``), which it takes from ``expected``; ``placement`` sets those alone."""
    with claimed_run(out_dir, make=False):
        return _resume(out_dir, epochs, expected, placement)


def _epochs_advice(
    out_dir: str | Path, differences: list[str], expected: Config | None, ckpt: dict[str, Any], started: Config
) -> str:
    """Where the epoch count alone differs, the command that continues the run for the epochs asked: resume takes
    that one difference, as its own option. Where resume would refuse those epochs (the run has trained as many,
    or stopped early), where the run stands instead, and what trains it further."""
    if expected is None or not all(difference.startswith("train.epochs:") for difference in differences):
        return ""
    epochs, trained = expected.train.epochs, ckpt["epoch"]
    if patience_exhausted(started, ckpt.get("bad_epochs", 0)):
        return (
            f"; it stopped early at epoch {trained} (early_stop_patience {started.train.early_stop_patience}), "
            "so no epoch count trains it further: start a new run in another folder to train on"
        )
    if epochs > trained:
        command = distributed.training_command("resume", str(out_dir), "--epochs", str(epochs))
        return f"; to train it to {counted(epochs, 'epoch')}: {command}"
    if trained < started.train.epochs:
        command = distributed.training_command("resume", str(out_dir))
        return (
            f"; it has trained {trained} of its {counted(started.train.epochs, 'epoch')} already: {command} trains "
            "the rest"
        )
    command = distributed.training_command("resume", str(out_dir), "--epochs", "N")
    return f"; it has finished at {counted(trained, 'epoch')}: to train it further, {command} with N above {trained}"


def _will_train(ckpt: dict[str, Any], started: Config, epochs: int | None, moved: list[str]) -> bool:
    """Whether a resume reaches the Trainer, not only a finished run's summary (``finished_summary``'s test, under
    the epochs asked for): epochs are left, or the data moved, whose new copy the Trainer checks."""
    if any(difference.startswith("data.root:") for difference in moved):
        return True
    if epochs is not None:
        started = started.model_copy(update={"train": started.train.model_copy(update={"epochs": epochs})})
    return left_to_train(started, ckpt)


def _numerics_moved(ckpt: dict[str, Any], config: Config, moved: list[str], device: torch.device | None) -> list[str]:
    """The ``NUMERICS_KEYS`` the run now computes with otherwise than until now, as ``key: before -> now``. Where
    the checkpoint records what it ran on (``Trainer.state``), by those values: a setting changed to what it had
    resolved to (auto -> cpu on the CPU it ran on) changes nothing, and one unchanged that resolves otherwise here
    (auto on another machine) does. A checkpoint written before that record, or a key it lacks or holds no plain
    value for, is judged by its settings alone; and so is a run without ``device`` (a finished run's summary, none
    resolved): nothing trains, so what this machine would compute with tells nothing, as before the record."""
    changed = {key: next((d for d in moved if d.startswith(f"{key}:")), None) for key in NUMERICS_KEYS}
    recorded = ckpt.get("numerics")
    if not isinstance(recorded, dict) or device is None:
        return [said for said in changed.values() if said]
    now = numerics_of(device, config.train.threads)
    moves: list[str] = []
    for key in NUMERICS_KEYS:
        value = now[key]
        before = recorded.get(key)
        if type(before) not in (str, int):  # none recorded, or not as Trainer.state writes it
            moves.extend(said for said in [changed[key]] if said)
            continue
        if before == value:
            continue
        section, name = key.split(".")
        setting = getattr(getattr(config, section), name)
        moves.append(changed[key] or f"{key}: {before} -> {value} ({setting or 'unset'} both times)")
    return moves


def _resume(
    out_dir: str | Path, epochs: int | None, expected: Config | None, placement: list[str] | None
) -> dict[str, Any]:
    remove_stale_temporaries(out_dir)
    ckpt = newest_state(Path(out_dir), _last_or_advice(Path(out_dir)))
    started = validate_config(ckpt["config"], started=True)
    differences = config_differences(started, expected, ignore=PLACEMENT_KEYS) if expected is not None else []
    if differences:
        advice = _epochs_advice(out_dir, differences, expected, ckpt, started)
        raise ConfigError(
            f"{out_dir} holds a run of another configuration, so it cannot be continued with this one "
            f"(started -> asked): {'; '.join(differences)}{advice}"
        )
    if distributed.is_main_process():  # rank 0 alone writes the run folder
        keep_edited_config(Path(out_dir), started)
    config = with_placement(started, placement, like=expected)
    moved = config_differences(started, config)
    # a device this machine lacks is refused before the run is said to continue here (the Trainer checks it only
    # after those lines): one named now, finished or not, and the one it started on where it will train; a
    # finished run's summary needs none, so a GPU run's is still read on a machine without one
    device = None
    will_train = _will_train(ckpt, started, epochs, moved)
    if any(d.startswith("train.device:") for d in moved) or will_train:
        device = distributed.process_device(resolve_device(config.train.device))
    if moved:
        # a finished run is only reported: nothing of it continues
        said = "the run continues elsewhere" if will_train else "the finished run is read elsewhere"
        log.info("%s (started -> now): %s", said, "; ".join(moved))
    numerics = _numerics_moved(ckpt, config, moved, device)
    if numerics:
        log.warning(
            "%s: other kernels or another order of floating-point sums from here on, so the run continues, but "
            "not bit for bit as it would have where it started",
            "; ".join(numerics),
        )
    trained = ckpt["epoch"]
    if epochs is not None and patience_exhausted(started, ckpt.get("bad_epochs", 0)):
        # it would only be reported finished again; its patience is the setting that ended it, which a resume keeps
        patience = started.train.early_stop_patience
        raise ConfigError(
            f"{out_dir} stopped early at epoch {trained} (early_stop_patience {patience}: {no_better_epoch(started)} "
            f"in its last {patience}): it has finished, so --epochs {epochs} would train none; to train on, start a "
            "new run in another folder with a larger early_stop_patience"
        )
    if epochs is not None and (epochs < trained or epochs == trained < started.train.epochs):
        # the last case would mark the run finished without its last epoch's work (lookahead's final sync)
        raise ConfigError(
            f"{out_dir} has trained {counted(trained, 'epoch')} already: --epochs {epochs} would train none; give more"
        )
    if epochs is not None:
        reshaped = sized_to_the_run(config)
        if epochs != config.train.epochs and reshaped:
            log.warning(
                "changing epochs from %d to %d reshapes %s: the run is no longer the one started",
                config.train.epochs,
                epochs,
                " and ".join(reshaped),
            )
        config = validate_config({**config.model_dump(), "train": {**config.train.model_dump(), "epochs": epochs}})
    # A finished run is said so before the Trainer reads and decodes the data (minutes) only to find nothing to
    # train on it; but one asked to go on from its data elsewhere has that copy checked against its images first
    # (an ensemble's next member trains on it, and its record takes the new place once a member accepts it).
    if not any(difference.startswith("data.root:") for difference in moved):
        finished = finished_summary(
            Path(out_dir), config, ckpt, config.data.val_size > 0, distributed.is_main_process()
        )
        if finished is not None:
            return finished
    trainer = Trainer(config, out_dir, resuming=True, started_on=ckpt.get("meta") or {})
    trainer.restore(ckpt)
    return trainer.fit()

"""Command line for export.

python -m export --checkpoint RUN/best.pt --name NAME [--precision fp32|fp16|int8] [--default] [--calibrate none]
python -m export verify [NAME]     re-verify a shipped model (default: the manifest's default) and its calibration
python -m export list [--models-dir DIR]   the models in the manifest
python -m export rederive REF --name NAME [--precision P] [--default]   a variant of a shipped FP32 graph whose
                                   checkpoint is gone: calibrated and/or converted, verified against that graph
python -m export default NAME [--for cpu|cuda]   make a listed model the default (on one kind of device)
python -m export card NAME [NAME ...]   the models' measured figures as a markdown table, for models/README.md
python -m export recover NAME --out FILE   the checkpoint of a shipped FP32 graph whose run is gone, rebuilt from
                                   the graph's weights and proven to reproduce it (for ensembles, Grad-CAM, other TTA)

--default-for cpu|cuda (export, rederive) makes the model the default on that kind of device only; --default makes
it the default everywhere no per-device default is set.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from inference.classes import ClassMatcher
from inference.devices import DEVICE_KINDS
from inference.errors import UsageError, missing_package
from inference.interrupts import interrupt_within, say_stopped, terminations_as_interrupts
from inference.manifest import (
    file_problems,
    load_manifest,
    remove_models,
    set_default,
    verify_file,
)
from inference.messages import (
    configure_logging,
    configure_streams,
    counted,
    flushed,
    os_error_text,
    reader_gone,
    stop_writing,
)
from inference.precisions import unsuited_hosts

from .parsers import (
    card_parser,
    default_parser,
    export_parser,
    list_parser,
    recover_parser,
    rederive_parser,
    remove_parser,
    verify_parser,
)

log = logging.getLogger("export")


def _list(models_dir: str) -> int:
    """Exits 1 when a listed file is missing or not the recorded one (the service would refuse to start)."""
    manifest = load_manifest(models_dir, verify=False)
    problems = file_problems(manifest, Path(models_dir))
    roles: dict[str, list[str]] = {}
    for kind in DEVICE_KINDS:
        roles.setdefault(manifest.default_for(kind).name, []).append(kind)
    width = max(len(m.name) for m in manifest.models)
    for m in manifest.models:
        mark = "*" if m.name in roles else " "  # what some kind of host serves by default
        where = f"  default on {'+'.join(roles[m.name])}" if m.name in roles else ""
        samples = m.metrics.get("val_samples")
        on = f" ({counted(samples, 'image')})" if samples else ""
        broken = "  BROKEN: the file is missing or not the recorded one" if m.name in problems else ""
        print(
            f"{mark} {m.name:<{width}} {m.arch:<14} {m.precision:<5} "
            f"val_top1={100 * m.metrics['val_top1']:.2f}%{on}  {m.file}{where}{broken}"
        )
    for problem in problems.values():
        print(f"error: {problem}", file=sys.stderr)
    return 1 if problems else 0


def _report(entry, parity) -> int:
    from .calibration import calibration_summary

    print(parity.summary())
    print(calibration_summary(entry.metrics["calibration"]))
    print(json.dumps({"name": entry.name, "file": entry.file, "sha256": entry.sha256}, indent=2))
    return 0


def main(argv: list[str] | None = None) -> int:
    configure_streams()
    configure_logging()
    argv = sys.argv[1:] if argv is None else argv
    try:
        with terminations_as_interrupts():
            return flushed(_command(argv))
    except UsageError as exc:  # what the user gave wrong (ManifestError too); any other error is a bug: its traceback
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # a missing file, a path through a file, a full disk, a permission: one line
        if isinstance(exc, BrokenPipeError) and reader_gone():  # `| head -1`: not the command's failure
            return stop_writing()
        # one of ours names what is missing in its message; the system's names the path and the reason
        print(f"error: {os_error_text(exc) if exc.errno is not None else exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:  # Ctrl-C, or SIGTERM/SIGHUP as Terminated
        # Graphs are built and checked in a temporary folder, and moved in beside the new manifest only once
        # verified; a recovered checkpoint is written to a temporary file and renamed: a stop leaves no part.
        # (a stop that arrives while a model is recorded waits for the record to be whole, and says so)
        return say_stopped(exc, f"interrupted: {(getattr(exc, '__notes__', None) or ['nothing was written'])[0]}")
    except Exception as exc:
        stop = interrupt_within(exc)
        if stop is None:
            raise
        return say_stopped(stop, "interrupted: nothing was written")


COMMANDS = ("verify", "list", "default", "remove", "card", "rederive", "recover")


def _command(argv: list[str]) -> int:
    """The manifest's own commands need no torch: they run on the serving install (scripts/setup.sh serve)."""
    if argv and not argv[0].startswith("-") and argv[0] not in COMMANDS:  # else: "required: --checkpoint, --name"
        # matched as a folder's name is to a class: a close name is suggested ("verfy"), a far one is not
        commands = ClassMatcher(COMMANDS)
        meant = commands.label(argv[0]) or commands.suggestion(argv[0])  # "Verify": the command, in its case
        hint = f" (did you mean {meant}?)" if meant else ""
        raise UsageError(
            f"unknown command {argv[0]!r}{hint}: export takes --checkpoint RUN/best.pt --name NAME, or one of "
            f"{', '.join(COMMANDS)}"
        )
    late = [word for word in argv[1:] if word in COMMANDS]
    exporting = any(word == "--checkpoint" or word.startswith("--checkpoint=") for word in argv)
    if argv and argv[0].startswith("-") and late and not exporting:
        raise UsageError(f"put the command first: python -m export {late[0]} [options] (its options after it)")
    if argv[:1] == ["list"]:
        return _list(list_parser().parse_args(argv[1:]).models_dir)
    if argv[:1] == ["default"]:
        args = default_parser().parse_args(argv[1:])
        manifest = set_default(args.models_dir, args.name, args.kinds)
        warning = unsuited_hosts(args.name, manifest.get(args.name).precision, args.kinds or DEVICE_KINDS)
        if warning:
            log.warning("%s", warning)
        _list(args.models_dir)  # done: a broken file elsewhere is marked, and is not this command's failure
        return 0
    if argv[:1] == ["remove"]:
        args = remove_parser().parse_args(argv[1:])
        remove_models(args.models_dir, args.names)
        _list(args.models_dir)
        return 0
    if argv[:1] == ["card"]:
        from .card import card_table

        args = card_parser().parse_args(argv[1:])
        manifest = load_manifest(args.models_dir, verify=False)
        entries = [manifest.get(n) for n in args.names]
        for entry in entries:  # the figures describe the recorded file, not whatever stands there now
            verify_file(entry, Path(args.models_dir), manifest)
        print(card_table(entries, args.models_dir))
        return 0
    return _conversion_command(argv)


# The commands that run a network, and their parsers: each reads its arguments (--help too) before torch loads.
_CONVERSIONS = {"verify": verify_parser, "recover": recover_parser, "rederive": rederive_parser}


def _conversion_command(argv: list[str]) -> int:
    """The commands that run a network (torch, ONNX Runtime): export, verify, recover, rederive."""
    command = argv[0] if argv[:1] and argv[0] in _CONVERSIONS else None
    args = _CONVERSIONS[command]().parse_args(argv[1:]) if command else export_parser().parse_args(argv)
    try:
        from .pipeline import ParityError
    except ImportError as exc:  # the serving install (scripts/setup.sh serve) has neither torch nor onnx
        missing = missing_package(exc)
        if missing is None:  # a mistake in this project's own imports keeps its traceback
            raise
        raise UsageError(
            f"{command or 'export'} needs {missing}, which this install lacks ({exc}): the serving install runs "
            "list, default, remove and card; the full one (bash scripts/setup.sh) runs the rest"
        ) from None
    try:
        return _convert(command, args)
    except ParityError as exc:
        print(f"FAILED: {exc}", file=sys.stderr)
        return 1


def _convert(command: str | None, args: argparse.Namespace) -> int:
    from .calibration import calibration_summary
    from .pipeline import export_checkpoint
    from .verify import verify_model

    if command == "verify":
        parity, calibration = verify_model(
            args.name, args.models_dir, args.cache_dir, args.max_val_images, args.reference_cache, args.data
        )
        print(parity.summary())
        print(calibration_summary(calibration))
        if not parity.passed:
            print(f"FAILED: {parity.verdict()}", file=sys.stderr)
            return 1
        print("verified")
        return 0
    if command == "recover":
        from .recover import recover_checkpoint

        meta, parity = recover_checkpoint(
            args.name, args.out, args.models_dir, args.cache_dir, args.max_val_images, args.data, args.force
        )
        print(parity.summary())
        print(f"{args.out}: {meta['arch']} checkpoint rebuilt from {meta['recovered_from']['file']}")
        return 0
    if command == "rederive":
        from .rederive import rederive

        entry, parity = rederive(
            args.reference,
            args.name,
            args.precision,
            args.models_dir,
            args.default,
            args.calibrate,
            args.calibration_images,
            args.cache_dir,
            args.max_val_images,
            args.fit,
            args.default_for,
            args.int8_ranges,
            args.data,
            args.replace,
        )
        return _report(entry, parity)
    entry, parity = export_checkpoint(
        args.checkpoint,
        args.name,
        args.precision,
        args.models_dir,
        args.default,
        args.calibration_images,
        args.cache_dir,
        args.max_val_images,
        args.tta,
        args.calibrate,
        args.fit,
        args.default_for,
        args.reference_cache,
        args.int8_ranges,
        args.data,
        args.replace,
    )
    return _report(entry, parity)


if __name__ == "__main__":
    sys.exit(main())

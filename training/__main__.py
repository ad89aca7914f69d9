"""Command line: ``python -m training {models,recipes,train,resume,ensemble,evaluate,compare,ablate} ...``."""

from __future__ import annotations

import argparse
import os
import re
import shlex
import sys
from pathlib import Path

from inference.devices import CudaPlacementError
from inference.errors import UsageError, missing_package
from inference.fits import FITS
from inference.interrupts import interrupted_status, say_stopped, terminations_as_interrupts
from inference.messages import (
    command_parser,
    configure_logging,
    configure_streams,
    flushed,
    os_error_text,
    reader_gone,
    stop_writing,
)

from .cli_types import add_set_option, path_text, positive_int


def _stopped_while_loading() -> int:
    """Ctrl-C while torch or the figures load (seconds): nothing has started, so no traceback. torchrun stops
    every process at once, and rank 0 says it for all (its RANK read as ``distributed.is_main_process`` reads it,
    which cannot be imported before torch)."""
    if os.environ.get("RANK", "0") == "0":
        print("interrupted", file=sys.stderr)
    return 130


try:
    from .checkpoint import LAST_FILE
    from .commands import cmd_ensemble, cmd_models, cmd_recipes, cmd_resume, cmd_train
    from .config_overrides import PLACEMENT_KEYS, check_distinct, placement_overrides
    from .distributed import (
        LaunchError,
        PeerLost,
        is_main_process,
        launched_processes,
        quiet_unless_main,
        training_command,
    )
except KeyboardInterrupt:
    sys.exit(_stopped_while_loading())
except ImportError as exc:  # the serving install (scripts/setup.sh serve) has no torch: said, not a traceback
    missing = missing_package(exc)
    if missing is None:  # a mistake in this project's own imports keeps its traceback
        raise
    print(
        f"error: python -m training needs {missing}, which this install lacks ({exc}): the full install (bash "
        "scripts/setup.sh) runs it",
        file=sys.stderr,
    )
    sys.exit(2)


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m training", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    models = sub.add_parser("models", help="list the model registry: name, parameter count, description")
    models.set_defaults(fn=cmd_models)
    sub.add_parser("recipes", help="list the built-in recipes").set_defaults(fn=cmd_recipes)

    p = sub.add_parser(
        "train",
        help="train a model from a recipe",
        description=(
            "Train from a recipe (a name from `recipes` or a YAML path) with key=value overrides, e.g. "
            "`python -m training train --recipe resnet9_half_cpu --set epochs=10 lr=0.2 dropout=0.1 augment=basic`. "
            "Bare keys resolve to their section (lr -> optim.lr); unknown ones become model "
            "arguments (use_se, dropout). Values are YAML: numbers (1e-3 and 010 too, read as written), true/false "
            "(yes/no and on/off too: quote such a word meant as text), null, [lists], {mappings}. "
            "The run folder gets config.yaml, history.json, training_curves.png, best.pt and last.pt. An ensemble "
            "recipe trains each member into its own folder inside the run folder, then joins them into best.pt; "
            "--set applies to every member."
        ),
    )
    p.add_argument(
        "--recipe", default="se_resnet18", type=path_text, help="recipe name or YAML file (default: se_resnet18)"
    )
    add_set_option(p, "config overrides (repeatable)")
    p.add_argument("--out", type=path_text, help="run folder (default: runs/<recipe>)")
    again = p.add_mutually_exclusive_group()
    again.add_argument("--force", action="store_true", help="start over even if the run folder holds a run")
    again.add_argument(
        "--resume",
        action="store_true",
        help="continue the run the folder holds exactly (as `resume`), or start one if it holds none: one command to "
        "re-run after any interruption (a preempted machine, a closed session); a run started with other settings "
        "is refused, naming them, not replaced",
    )
    p.set_defaults(fn=cmd_train)

    p = sub.add_parser(
        "resume",
        help="continue a run from its last.pt",
        description=(
            "Continue an interrupted run exactly where its last saved epoch left it (same config, RNG and data order)."
        ),
    )
    p.add_argument("run", type=path_text, help="run folder holding last.pt")
    p.add_argument(
        "--epochs",
        type=positive_int,
        help="change the total epoch budget (reshapes cosine, linear and triangular schedules and lookahead)",
    )
    add_set_option(
        p,
        f"where the run goes on, if not where it started: {', '.join(PLACEMENT_KEYS)} (e.g. "
        "data.root=/new/path device=cpu); nothing else, which would make it another run",
    )
    p.set_defaults(fn=cmd_resume)

    p = sub.add_parser(
        "ensemble",
        help="join trained checkpoints into one that averages their probabilities",
        description=(
            "Join checkpoints trained on the same data (classes, dataset, split, input size) into one ensemble "
            "checkpoint: its output is the log of the members' mean softmax probability. `evaluate`, `compare` "
            "and `python -m export` take it as any checkpoint; the exported graph holds every member. Given "
            "report folders instead, print what their models' ensemble would score on the reports' images."
        ),
    )
    p.add_argument(
        "checkpoints",
        nargs="+",
        type=path_text,
        metavar="MODEL",
        help="two or more checkpoint files or run folders (their best.pt) to join; or report folders of "
        "`evaluate` on the same images, to print what their ensemble would score without building it",
    )
    p.add_argument("--out", type=path_text, help="the ensemble checkpoint to write, e.g. runs/ensembles/NAME.pt")
    p.add_argument("--force", action="store_true", help="replace --out if it exists")
    p.add_argument(
        "--tta",
        nargs="+",
        action="extend",
        default=[],
        metavar="TTA",
        help="each member's own test-time augmentation (none, flip, multicrop), one per checkpoint in order, "
        "averaged inside the member; default none (the ensemble as a whole can still take evaluate's or "
        "export's --tta)",
    )
    p.add_argument(
        "--fit",
        choices=list(FITS),
        help="how the dataset's images are fitted to the input, for members trained with different fits",
    )
    p.add_argument("--json", action="store_true", help="print a reports' estimate as JSON")
    p.set_defaults(fn=cmd_ensemble)

    from .reports.cli import add_report_commands

    add_report_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    configure_streams()
    configure_logging()
    try:
        parser = get_args_parser()  # imports the reports' figures (matplotlib): a second or two
    except KeyboardInterrupt:
        return _stopped_while_loading()
    words = sys.argv[1:] if argv is None else argv
    # --set is a subcommand's flag: its mistakes are told with that subcommand's usage, as argparse's are below
    # (the program takes no option but -h, so its first other word is the subcommand)
    _check_set_words(command_parser(parser, next((word for word in words if not word.startswith("-")), None)), words)
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        command_parser(parser, args.command).error(_unrecognized(args, unknown))
    try:
        check_distinct(getattr(args, "set", None) or [])  # --set's of train, resume and ablate, however many
        _check_processes(args.command)
        with terminations_as_interrupts(), quiet_unless_main():
            return flushed(args.fn(args))
    except OSError as exc:  # a missing file, a path through a file, a full disk, a permission
        if isinstance(exc, BrokenPipeError) and reader_gone():  # `| head -1`: not the command's failure
            return stop_writing()
        if isinstance(exc, PeerLost):  # the run stopped as if interrupted: where it can go on from
            continuation = _continuation(args)
            print(f"error: {exc}{'; stopped' + continuation if continuation else ''}", file=sys.stderr)
            return 2
        # one of ours names what is missing in its message; the system's names the path and the reason
        print(f"error: {os_error_text(exc) if exc.errno is not None else exc}", file=sys.stderr)
        return 2
    except FloatingPointError as exc:  # the run diverged: the settings' fault, named by the trainer
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as exc:  # Ctrl-C, or SIGTERM/SIGHUP as Terminated
        # torchrun stops every process at once: rank 0 says where the run stopped, once
        return say_stopped(exc, _interrupted(args)) if is_main_process() else interrupted_status(exc)
    # What the user gave wrong (every typed refusal is a UsageError; a CUDA device this host lacks is a
    # RuntimeError of its own), said in one line; anything else is a bug and keeps its traceback.
    except (UsageError, CudaPlacementError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


# The commands that train, which torchrun's processes share (training/distributed.py). The others would each do
# the whole work in every process, and write their report, table or checkpoint into one place at once.
DISTRIBUTED_COMMANDS = ("train", "resume")


def _check_processes(command: str) -> None:
    processes = launched_processes()
    if processes > 1 and command not in DISTRIBUTED_COMMANDS:
        raise LaunchError(f"{command} runs in one process; run it without torchrun (WORLD_SIZE={processes} here)")


# What each command that takes --set takes besides its options: a word after --set may be one of them, misplaced.
_OWN_ARGUMENTS = {"resume": "the run folder"}
# What a setting's key looks like (train.epochs, epochs): a word of another form is no setting missing its value
_SETTING_KEY = re.compile(r"[A-Za-z_][\w.]*")


def _check_set_words(parser: argparse.ArgumentParser, argv: list[str]) -> None:
    """--set takes every word after it up to the next option: a run folder or model after it would be taken for
    a setting, and argparse would say the run is missing. Said as what it is."""
    taking = False
    for index, word in enumerate(argv):
        if word == "--set":
            taking = True
        elif taking and (split := _split_value(argv[index:])):
            parser.error(
                f"--set {word!r}: the shell split this value at its spaces; quote it as one word: "
                f"--set {shlex.quote(' '.join(split))}"
            )
        elif word.startswith("-"):
            taking = False
        elif taking and "=" not in word:
            command = parser.prog.split()[-1]
            own = _OWN_ARGUMENTS.get(command)
            if own:
                said = f"--set takes every word after it, so give {own} before --set (and a setting its =VALUE)"
            elif word.endswith((".yaml", ".yml")):
                said = f"{command} takes no arguments of its own (give a recipe file as --recipe {word})"
            elif _SETTING_KEY.fullmatch(word):
                said = f"give the setting its value, --set {word}=VALUE ({command} takes no arguments of its own)"
            else:  # a folder, as resume takes one: train and ablate take theirs as --out
                said = f"{command} takes no arguments of its own (give a folder as --out {word})"
            parser.error(f"{word!r} after --set is not KEY=VALUE: {said}")


def _split_value(words: list[str]) -> list[str]:
    """The words of one ``KEY={...}`` or ``KEY=[...]`` split by the shell (``augment={cutout: 8}`` unquoted), or
    [] where ``words[0]`` is no such start: its brackets close in the words after it, none of which is a KEY=VALUE
    of its own."""
    key, sign, value = words[0].partition("=")
    depth = _bracket_depth(value)
    if not sign or not key or depth <= 0:
        return []
    for end, word in enumerate(words[1:], start=2):
        if "=" in word or word == "--set":
            return []
        depth += _bracket_depth(word)
        if depth <= 0:
            return words[:end]
    return []


def _bracket_depth(text: str) -> int:
    return sum(text.count(c) for c in "{[") - sum(text.count(c) for c in "}]")


def _unrecognized(args: argparse.Namespace, unknown: list[str]) -> str:
    """argparse's "unrecognized arguments", and where a setting given as a flag (``--epochs 1``) goes instead."""
    from .config import ConfigError
    from .config_overrides import field_owner

    text = f"unrecognized arguments: {' '.join(unknown)}"
    flag = next((word for word in unknown if word.startswith("--")), None)
    if flag is None or not hasattr(args, "set"):
        return text
    key, _, value = flag[2:].replace("-", "_").partition("=")
    following = unknown[unknown.index(flag) + 1 : unknown.index(flag) + 2]
    shown = value or (following[0] if following and not following[0].startswith("-") else "VALUE")
    if key in ("recipe", "config"):  # a recipe's name is no setting: --set recipe= would only rename the run
        return f"{text} ({_where_a_recipe_goes(args, shown)})"
    try:
        dotted = field_owner(key)
    except ConfigError:  # a key of two sections: still a setting
        dotted = key
    if dotted.startswith("model.args."):  # no section has it: not a setting either
        return text
    if args.fn is cmd_resume and dotted not in PLACEMENT_KEYS:  # --set would refuse it too: say why now
        return (
            f"{text} (a resumed run keeps the settings it started with; it takes new values only for where it "
            f"runs, with --set: {', '.join(PLACEMENT_KEYS)})"
        )
    return f"{text} (settings are given with --set: --set {key}={shown})"


def _where_a_recipe_goes(args: argparse.Namespace, recipe: str) -> str:
    if args.fn is cmd_resume:
        return (
            "a resumed run continues the recipe it started with; to train another, start a run: python -m "
            f"training train --recipe {recipe} --out NEW_FOLDER"
        )
    return f"a recipe, a built-in name or a YAML file, is given with --recipe: --recipe {recipe}"


def _interrupted(args: argparse.Namespace) -> str:
    return f"interrupted{_continuation(args)}"


def _continuation(args: argparse.Namespace) -> str:
    """Where to go on after a run stopped (Ctrl-C, a lost peer), after "interrupted" or "stopped". Only train and
    resume leave a run to continue, and only once an epoch has been saved: evaluate or compare sent to `resume`, or
    a run stopped in its first epoch, would find none."""
    run = getattr(args, "run", None) if args.fn in (cmd_train, cmd_resume) else None
    if run is None:
        return ""
    if getattr(args, "ensemble_run", False):
        return f": the members finished in {run} are kept; continue with the same command and --resume"
    last = Path(run) / LAST_FILE
    if not last.is_file():
        return f" before {run} completed an epoch: nothing to continue; run the same command again"
    # what this command was asked for that the resume must be told again: a run continued elsewhere and stopped
    # before its next epoch was saved still has the old place in its last.pt
    arguments = ["resume", str(run)]
    if args.fn is cmd_resume:
        placement = args.set
    else:
        placement = placement_overrides(args.set) if args.resume else []
    if args.fn is cmd_resume and args.epochs:
        arguments += ["--epochs", str(args.epochs)]
    arguments += ["--set", *placement] if placement else []
    return f": the last saved epoch is in {last}; continue with `{training_command(*arguments)}`"


if __name__ == "__main__":
    sys.exit(main())

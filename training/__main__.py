"""Command line: ``python -m training {models,recipes,train,resume,ensemble,evaluate,compare,ablate} ...``."""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
from pathlib import Path

from inference.devices import CudaPlacementError
from inference.errors import UsageError
from inference.fits import FITS
from inference.interrupts import interrupted_status, say_stopped, terminations_as_interrupts
from inference.messages import (
    command_parser,
    configure_logging,
    configure_streams,
    counted,
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
    from .checkpoint import BEST_FILE, CONFIG_FILE, ENSEMBLE_RUN_FILE, LAST_FILE, RUN_FILES, claimed_run
    from .config import (
        PLACEMENT_KEYS,
        Config,
        ConfigError,
        build_config,
        check_distinct,
        is_ensemble_recipe,
        list_ensemble_recipes,
        list_recipes,
        placement_overrides,
    )
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


def cmd_models(args: argparse.Namespace) -> int:
    import torch

    from .models import DESCRIPTIONS, count_parameters, create_model, list_models

    print(f"{'name':<16} {'params (10 classes)':>20}  description")
    for name in list_models():
        # shapes only, no storage or initialisation: built at full size, the zoo takes 10-25 s on 2 cores to count
        with torch.device("meta"):
            params = count_parameters(create_model(name, 10))
        print(f"{name:<16} {params:>20,}  {DESCRIPTIONS[name]}")
    return 0


def cmd_recipes(args: argparse.Namespace) -> int:
    from .ensemble_recipe import load_ensemble_recipe

    print(f"{'recipe':<22} {'model':<18} {'epochs':>6} {'batch':>6}  optimizer")
    for name in list_recipes():
        config = build_config(name)
        t = config.train
        print(f"{name:<22} {config.model.name:<18} {t.epochs:>6} {t.batch_size:>6}  {config.optim.name}")
    ensembles = list_ensemble_recipes()
    if ensembles:
        print("\nensemble recipes (members trained in turn, then joined):")
        width = max(22, *map(len, ensembles))
        for name in ensembles:
            members = load_ensemble_recipe(name).members
            listed = ", ".join(f"{m.recipe}{' ' + ' '.join(m.set) if m.set else ''} (tta {m.tta})" for m in members)
            print(f"{name:<{width}} {listed}")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    if is_ensemble_recipe(args.recipe):
        return _train_ensemble(args)
    config = build_config(args.recipe, args.set)
    out = _run_folder(Path(args.out) if args.out else Path("runs") / config.recipe)
    args.run = out  # for the message of an interrupt
    with claimed_run(out):  # before its files are looked at: another command may be changing them
        summary = _train_into(out, config, args)
    print(json.dumps(summary, indent=2))
    return 0


def _train_into(out: Path, config: Config, args: argparse.Namespace) -> dict:
    from .engine import train
    from .resume import best_to_go_on_from, resume

    if (out / ENSEMBLE_RUN_FILE).exists() and not args.force:
        raise ConfigError(
            f"{out} holds an ensemble recipe's run, whose {BEST_FILE} this run would replace; train into "
            "another folder, or start over with --force"
        )
    held = [name for name in RUN_FILES if (out / name).exists()]
    recipe_file = Path(args.recipe) if args.recipe.endswith((".yaml", ".yml")) else None
    starts = not (args.resume and LAST_FILE in held)  # a new run, which writes its settings to config.yaml
    if starts and recipe_file is not None and recipe_file.resolve() == (out / CONFIG_FILE).resolve():
        raise ConfigError(
            f"--recipe {args.recipe} is the config.yaml a run in {out} writes: copy the recipe elsewhere, or "
            "train into another --out"
        )
    if LAST_FILE in held and args.resume:
        summary = resume(out, expected=config)
    elif LAST_FILE in held and not args.force:
        raise ConfigError(
            f"{out} already holds a run; continue it with `{training_command('resume', str(out))}` (or this "
            "command with --resume), or start over with --force"
        )
    elif held and not args.force:
        # a finished run whose last.pt was deleted to save space, one killed before its first last.pt, or a folder
        # of someone's files: training would replace them, and --resume has nothing to continue from
        advice = best_to_go_on_from(out)
        raise ConfigError(
            f"{out} holds a run's files ({', '.join(held)}) but no {LAST_FILE} to continue from; train into "
            "another folder, or start over with --force (which removes them)"
            + (f". {advice} and train with --resume to continue from that epoch" if advice else "")
        )
    else:
        summary = train(config, out)
    return summary


def _run_folder(out: Path) -> Path:
    """``out``, refused now if it cannot become a run folder (a file, a path through one, a folder it may not
    write in), before the dataset is read and the network built (minutes), not when the first checkpoint is
    due. Nothing is made here: a run refused later leaves no folder behind."""
    existing = next(p for p in (out, *out.absolute().parents) if p.exists() or p == p.parent)
    if not existing.is_dir():
        raise ConfigError(f"--out {out} is not a folder" + ("" if existing == out else f": {existing} is a file"))
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(f"cannot write to --out {out}: permission denied on {existing}")
    report = _report_in(out)
    if report is not None:  # --force too: it removes a run's files only, leaving a folder of both
        raise ConfigError(f"--out {out} holds {report}, not a run: train into another folder")
    return out


def _report_in(folder: Path) -> str | None:
    """What report the folder holds (evaluate's, compare's, ablate's), or None: a run written in beside it would
    leave a folder that is neither (the report's history.json and training_curves.png replaced by the run's)."""
    from .reports.ablate import ABLATION_FILE
    from .reports.predictions import PREDICTIONS_FILE

    kinds = {PREDICTIONS_FILE: "an evaluate report", "compare.json": "a comparison", ABLATION_FILE: "an ablation"}
    return next((kind for name, kind in kinds.items() if (folder / name).is_file()), None)


def _train_ensemble(args: argparse.Namespace) -> int:
    from .ensemble_recipe import finished_run, load_ensemble_recipe, started_run, train_ensemble

    recipe = load_ensemble_recipe(args.recipe)
    out = _run_folder(Path(args.out) if args.out else Path("runs") / recipe.name)
    args.run, args.ensemble_run = out, True  # for the message of an interrupt
    with claimed_run(out):  # before its files are looked at: another command may be changing them
        if (out / LAST_FILE).exists() and not args.force:
            raise ConfigError(
                f"{out} holds a single network's run, whose {BEST_FILE} the joined ensemble would replace; "
                "train into another folder, or start over with --force"
            )
        if started_run(out) is not None and not (args.resume or args.force):
            if finished_run(out):
                raise ConfigError(
                    f"{out} holds a finished ensemble run, joined into {out / BEST_FILE}; train into another folder, "
                    "or start over with --force"
                )
            raise ConfigError(
                f"{out} already holds an ensemble run; continue it with this command and --resume (finished "
                "members are kept), or start over with --force"
            )
        summary = train_ensemble(recipe, out, args.set, resume=args.resume)
    print(json.dumps(summary, indent=2))
    print(
        f"ensemble written to {summary['checkpoint']}; measure it with `python -m training evaluate --checkpoint "
        f"{summary['checkpoint']}`"
    )
    return 0


def cmd_resume(args: argparse.Namespace) -> int:
    if Path(args.run).is_file():  # the checkpoint itself named: its run folder is meant
        if Path(args.run).name != LAST_FILE:
            raise ConfigError(f"resume takes a run folder (the one holding {LAST_FILE}), not the file {args.run}")
        args.run = str(Path(args.run).parent)
    with claimed_run(args.run, make=False):  # before its files are looked at: another command may be changing them
        return _resume(args)


def _resume(args: argparse.Namespace) -> int:
    from .ensemble_recipe import finished_run, started_run
    from .resume import resume

    started = started_run(args.run)
    if started is not None and finished_run(args.run):
        best = Path(args.run) / BEST_FILE
        raise ConfigError(
            f"{args.run} is a finished ensemble run, its members joined into {best}: nothing to continue (measure "
            f"it with `python -m training evaluate --checkpoint {best}`)"
        )
    if started is not None:
        # the overrides it was started with: without them the run would be refused as another configuration
        given, name = started.get("overrides") or [], started["recipe"]["name"]
        # a recipe of the user's own is recorded by its file, which --recipe takes from any folder; an older
        # record holds its name only, which is a built-in's or the file's own
        recipe = started.get("file") or (name if name in list_ensemble_recipes() else f"{name}.yaml")
        command = ["python", "-m", "training", "train", "--recipe", recipe]
        command += [*(["--set", *given] if given else []), "--out", str(args.run), "--resume"]
        raise ConfigError(
            f"{args.run} is an ensemble run: continue it with `{shlex.join(command)}` (finished members are "
            "kept, the unfinished one continues exactly)"
        )
    print(json.dumps(resume(args.run, args.epochs, placement=args.set), indent=2))
    return 0


def cmd_ensemble(args: argparse.Namespace) -> int:
    from .ensemble import estimate_from_reports, join_checkpoints
    from .reports.compare import classify

    kinds = {classify(path) for path in args.checkpoints}
    if kinds == {"report"}:
        if args.out or args.tta or args.fit:
            raise UsageError(
                "reports hold predictions, not weights: give checkpoints to write an ensemble (a report's "
                "test-time augmentation is the one it was evaluated with)"
            )
        result = estimate_from_reports(args.checkpoints)
        print(json.dumps(result, indent=2) if args.json else _format_estimate(result))
        return 0
    if "onnx" in kinds:
        raise UsageError(
            "an ONNX file holds no weights to join: give the checkpoints (or run folders) it was exported from, "
            "or report folders to estimate; export the joined checkpoint afterwards"
        )
    if kinds != {"checkpoint"}:
        raise UsageError("give checkpoints (or run folders) to join, or report folders to estimate, not a mixture")
    if not args.out:
        raise UsageError("--out is required to write the ensemble checkpoint")
    meta = join_checkpoints(args.checkpoints, args.out, args.tta, args.fit, replace=args.force)
    for member in meta["members"]:
        top1 = member["val_top1"]
        epoch = f" at epoch {member['epoch']}" if member.get("epoch") is not None else ""
        recorded = f"{100 * top1:.2f}% val top-1{epoch}" if top1 is not None else "no recorded accuracy"
        print(f"  {member['checkpoint']}: {member['arch']} ({member['recipe']}), {recorded}, tta {member['tta']}")
    own_views = any(m["tta"] != "none" for m in meta["members"])
    print(
        f"ensemble of {len(meta['members'])} written to {args.out}; measure it with "
        f"`python -m training evaluate --checkpoint {args.out}{'' if own_views else ' --tta multicrop'}`"
    )
    return 0


def _format_estimate(result: dict) -> str:
    from .reports.compare import views_text

    lines = [
        f"{100 * m['top1']:.2f}%  {m['report']} ({views_text(m['tta'], m['graph_tta']) or 'tta none'})"
        for m in result["members"]
    ]
    vs = result["against_best_member"]
    low, high = vs["interval_95"]
    lines.append(
        f"{100 * result['top1']:.2f}%  their mean probability, {counted(result['samples'], 'image')}: "
        f"{100 * vs['difference']:+.2f} points against the best member (paired 95% interval {100 * low:+.2f} to "
        f"{100 * high:+.2f}, {vs['interval_method']}; McNemar p = "
        f"{vs['mcnemar']['p_value']:.3g}, {vs['mcnemar']['method']})"
    )
    lines += [f"note: {note}" for note in result.get("notes", [])]  # as compare says them
    return "\n".join(lines)


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
            parser.error(
                f"{word!r} after --set is not KEY=VALUE: --set takes every word after it, so give the command's "
                "own arguments (a run folder, a model) before --set"
            )


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
    from .config import ConfigError, field_owner

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

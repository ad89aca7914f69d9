"""What ``python -m training``'s own subcommands do once their arguments are parsed (models, recipes, train,
resume, ensemble): the refusals each makes before a run folder is touched, and what it prints. Apart from
__main__.py, which parses the command line and turns what goes wrong into one line or a place to go on from;
the reports' subcommands are reports/cli.py's."""

from __future__ import annotations

import argparse
import json
import os
import shlex
from pathlib import Path

from inference.errors import UsageError
from inference.messages import counted

from .checkpoint import BEST_FILE, CONFIG_FILE, ENSEMBLE_RUN_FILE, LAST_FILE, RUN_FILES, claimed_run
from .config import Config, ConfigError
from .config_recipes import build_config, is_ensemble_recipe, list_ensemble_recipes, list_recipes
from .distributed import training_command


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
    from .reports.ablate_folders import ABLATION_FILE
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

"""Ensemble recipes: one recipe file that trains several networks, each from its own recipe, and joins them
(training/ensemble.py), so that one ``python -m training train --recipe NAME`` reproduces a shipped ensemble.

    # training/recipes/NAME.yaml
    ensemble:
      fit: center_crop            # optional: the ensemble's fit, for members trained with different ones
      members:
        - {recipe: resnet9_half_cpu, tta: flip}
        - {recipe: airbench94_muon, set: [epochs=16], tta: none}
        - {recipe: mine/wide.yaml}  # a recipe file: a relative path is read beside this file

A member's recipe file named by a relative path is read from the ensemble recipe's own folder, so the run
trains the same members from any current folder (``resume`` names the recipe by its full path); a path found
only from the current folder is still read from there. A member's ``set`` is a list of settings, read as
``--set`` reads them: a path in it (``distill_from=runs/teacher``, ``data.root=...``) is read from the current
folder, as the same setting in any recipe is, and as the run folders of ``--out`` are, where a teacher trained
as an earlier member lies. A teacher missing there but found beside the ensemble recipe is refused naming it.

The run folder holds one ordinary run folder per member (``1-resnet9_half_cpu/``, ...), trained one after
another, each resumable exactly as any run; then ``best.pt`` (the joined ensemble, so evaluate and export take
the folder as they take any run's), ``ensemble.yaml`` (the resolved recipe and overrides) and
``summary.json``. Command-line overrides apply to every member, after the member's own ``set``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, ValidationInfo, field_validator

from inference.files import write_text_atomic
from inference.fits import FitName
from inference.messages import validation_problems

from .checkpoint import (
    BEST_FILE,
    CONFIG_FILE,
    ENSEMBLE_RUN_FILE,
    LAST_FILE,
    RUN_FILES,
    SUMMARY_FILE,
    checkpoint_file,
    claimed_run,
    clear_run,
)
from .config import Config, ConfigError
from .config_overrides import check_distinct, placement_overrides
from .config_recipes import ENSEMBLE_KEY, RECIPES_DIR, is_ensemble_recipe, load_ensemble_recipe_raw
from .config_yaml import dump_yaml, read_yaml, yaml_problem
from .distill import TEACHER_FILE, TeacherError, teacher_file
from .engine import train
from .ensemble import check_compatible, join_checkpoints
from .inference import TTA_CHOICES
from .models.ensemble import ENSEMBLE_ARCH
from .preflight import WarnedOnce, buildable_config, check_run_lengths, warned_once
from .resume import resume as resume_run
from .run_data import recorded_data


class MemberRecipe(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    recipe: str
    set: list[str] = Field(default_factory=list)
    tta: str = "none"

    @field_validator("tta")
    @classmethod
    def _known_tta(cls, value: str) -> str:
        if value not in TTA_CHOICES:
            raise ValueError(f"unknown test-time augmentation {value!r}; valid: {', '.join(TTA_CHOICES)}")
        return value

    @field_validator("recipe")
    @classmethod
    def _network_recipe(cls, value: str, info: ValidationInfo) -> str:
        if is_ensemble_recipe(member_recipe_file(value, (info.context or {}).get("folder"))):
            raise ValueError(f"{value!r} is itself an ensemble recipe: list its members instead")
        return value


def member_recipe_file(recipe: str, folder: Path | None) -> str:
    """Where a member's recipe is read: a built-in's name or an absolute path as given; a relative file path
    beside the ensemble recipe (in ``folder``), unless only the current folder holds it, where members were read
    from before (a recipe that worked there keeps working)."""
    path = Path(recipe)
    if folder is None or not path.suffix or path.is_absolute():
        return recipe
    beside = folder / path
    return recipe if path.is_file() and not beside.is_file() else str(beside)


class EnsembleRecipe(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    members: list[MemberRecipe] = Field(min_length=2)
    fit: FitName | None = None
    # Where a recipe of the user's own was read from: its name alone, unlike a built-in's, finds no recipe again.
    # Not a field, so a recipe file cannot set it.
    _file: str | None = PrivateAttr(None)
    # The folder of the file the recipe was read from, which its members' relative recipe paths start from.
    _folder: Path | None = PrivateAttr(None)

    @property
    def file(self) -> str | None:
        return self._file

    def folder(self, index: int) -> str:
        return f"{index + 1}-{Path(self.members[index].recipe).stem}"

    def member_recipe(self, index: int) -> str:
        """What member ``index``'s configuration is built from (``member_recipe_file``); the recipe as written
        stays the member's name, in the run's record and folder names."""
        return member_recipe_file(self.members[index].recipe, self._folder)


def load_ensemble_recipe(name_or_path: str) -> EnsembleRecipe:
    raw = load_ensemble_recipe_raw(name_or_path)
    section = raw.get(ENSEMBLE_KEY)
    extra = sorted(set(raw) - {ENSEMBLE_KEY, "recipe"})
    if extra:
        raise ConfigError(
            f"ensemble recipe {raw['recipe']!r}: sections {extra} belong in the members' recipes (or their `set`)"
        )
    if not isinstance(section, dict) or "name" in section:
        # a `name` there would pass for the field the recipe's own name fills
        raise ConfigError(f"ensemble recipe {raw['recipe']!r}: `{ENSEMBLE_KEY}` must hold `members` (and `fit`)")
    # a file, as config_recipes._read_recipe reads it; a name without one is a built-in's
    file = Path(name_or_path).resolve() if Path(name_or_path).suffix else None
    folder = file.parent if file else RECIPES_DIR
    try:
        recipe = EnsembleRecipe.model_validate({"name": raw["recipe"], **section}, context={"folder": folder})
    except ValidationError as exc:
        raise ConfigError(f"invalid ensemble recipe {raw['recipe']!r}: {validation_problems(exc)}") from exc
    recipe._file, recipe._folder = (str(file) if file else None), folder
    return recipe


def member_configs(recipe: EnsembleRecipe, overrides: list[str] | None = None) -> list[Config]:
    """Each member's full configuration: its recipe, its own ``set``, then the command line's overrides. Each
    network is built and given one image first, so a setting no member can take is refused before any trains;
    so are members the join would refuse, trained on other data, splits or input sizes."""
    return _built_members(recipe, overrides)[0]


def _member_name(recipe: EnsembleRecipe, i: int) -> str:
    """Member ``i`` as its refusals and warnings name it."""
    return f"ensemble member {i + 1} ({recipe.members[i].recipe})"


def _built_members(recipe: EnsembleRecipe, overrides: list[str] | None) -> tuple[list[Config], WarnedOnce]:
    """``member_configs``, and the warnings their building said once for all, not to be said again as each trains."""
    configs = []
    with warned_once("ensemble member") as warned:  # a warning every member gets is said once, not once each
        for i, member in enumerate(recipe.members):
            what = _member_name(recipe, i)
            try:  # a member's `set` is its command line: a key given twice there is a mistake, as in --set
                check_distinct(list(member.set))
            except ConfigError as exc:
                raise ConfigError(f"{what}, its `set`: {exc}") from None
            configs.append(buildable_config(recipe.member_recipe(i), [*member.set, *(overrides or [])], what, warned))
    _check_distinct(recipe, configs)
    _check_joinable(recipe, configs)
    return configs, warned


def _check_distinct(recipe: EnsembleRecipe, configs: list[Config]) -> None:
    """Two members of one configuration train the same network (bit for bit on a CPU): the join refuses a
    checkpoint given twice for that reason, and here it would come after twice the training."""
    for i, config in enumerate(configs):
        twin = next((j for j in range(i) if configs[j].model_dump() == config.model_dump()), None)
        if twin is not None:
            raise ConfigError(
                f"ensemble recipe {recipe.name!r}: member {i + 1} ({recipe.members[i].recipe}) has the recipe and "
                f"settings of member {twin + 1}, so it would train the same network again: give it a seed of its "
                "own (`set: [seed=N]`) or other settings"
            )


def _check_joinable(recipe: EnsembleRecipe, configs: list[Config]) -> None:
    """The join's own check (``ensemble.check_compatible``) on what each member's checkpoint will record of its
    data; the classes and the images' fingerprint, known only once the data is read, follow from those."""
    names = [f"member {i + 1} ({member.recipe})" for i, member in enumerate(recipe.members)]
    first = configs[0].data.fit
    odd = next((i for i, config in enumerate(configs) if config.data.fit != first), None)
    if recipe.fit is None and odd is not None:
        # check_compatible's advice names the ensemble command's --fit; a recipe chooses it in its own file
        raise ConfigError(
            f"ensemble recipe {recipe.name!r}: {names[0]} and {names[odd]} fit images differently "
            f"({first!r} against {configs[odd].data.fit!r}): give the ensemble's `fit` beside its `members`"
        )
    metas = [
        {"arch": config.model.name, "input_size": config.data.image_size, **recorded_data(config)} for config in configs
    ]
    try:
        check_compatible(metas, names, fit_given=True)
    except ValueError as exc:
        raise ConfigError(
            f"ensemble recipe {recipe.name!r}: {exc}; the join takes only networks trained on the same data, split "
            "and input size: give the members the same (in their `set`, or for all with --set)"
        ) from exc


def _resolved(recipe: EnsembleRecipe, overrides: list[str]) -> dict[str, Any]:
    """The run's record; ``file``, where the recipe is the user's own, is what ``resume`` tells to train again."""
    resolved = {"recipe": recipe.model_dump(mode="json"), "overrides": list(overrides)}
    return {**resolved, "file": recipe.file} if recipe.file else resolved


def _what_it_computes(resolved: dict[str, Any]) -> dict[str, Any]:
    """A run as resolved, less where it runs and where its recipe file lies: a run continued from another
    data.root or device is the same run (each member's resume checks its data and warns of numerics,
    ``resume.resume``), and so is one continued from a moved recipe file, or from a record made before the file
    was recorded."""
    placement = placement_overrides(resolved.get("overrides") or [])
    kept = {key: value for key, value in resolved.items() if key != "file"}
    return {**kept, "overrides": [o for o in resolved.get("overrides") or [] if o not in placement]}


def started_run(out: str | Path) -> dict[str, Any] | None:
    """What the ensemble run in ``out`` was started with (its recipe and overrides), or None if none was."""
    record = Path(out) / ENSEMBLE_RUN_FILE
    if not record.is_file():
        return None
    try:
        started = read_yaml(record.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        why = yaml_problem(exc) if isinstance(exc, yaml.YAMLError) else "it is not UTF-8 text"
        raise ConfigError(f"{record} is damaged ({why}); start the run over with --force") from None
    overrides = started.get("overrides") if isinstance(started, dict) else None
    recipe = started.get("recipe") if isinstance(started, dict) else None
    if not isinstance(started, dict) or not (
        isinstance(overrides, list)
        and all(isinstance(item, str) for item in overrides)
        and isinstance(started.get("file", ""), str)
        # `resume` names the command to continue by the recipe's name
        and isinstance(recipe, dict)
        and isinstance(recipe.get("name"), str)
    ):
        raise ConfigError(
            f"{record} is damaged (not a recipe and a list of overrides); start the run over with --force"
        )
    return started


def finished_run(out: str | Path) -> bool:
    """Whether the ensemble run in ``out`` joined its members (its summary is written after the join)."""
    return (Path(out) / SUMMARY_FILE).is_file() and (Path(out) / BEST_FILE).is_file()


def train_ensemble(
    recipe: EnsembleRecipe, out: str | Path, overrides: list[str] | None = None, resume: bool = False
) -> dict[str, Any]:
    """Train the members one after another into ``out``'s member folders, then join them into ``out/best.pt``.
    With ``resume``, a member folder that holds a run continues it exactly (a finished one returns at once);
    a folder started with another recipe or other overrides is refused, naming both."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ConfigError(
            "an ensemble recipe trains its members one after another in one process; under torchrun, train each "
            "member's recipe on its own and join them with `python -m training ensemble`"
        )
    with claimed_run(out):  # each member's folder is claimed by its own run
        return _train_members(recipe, Path(out), list(overrides or []), resume)


def _check_teachers(recipe: EnsembleRecipe, configs: list[Config], out: Path) -> None:
    """Each member's teacher, refused as its own run would refuse it (missing, an ONNX file, a checkpoint the run
    writes over), before the first member trains rather than after the ones before it. A teacher in an earlier
    member's folder is that member's run, trained by then."""
    for i, config in enumerate(configs):
        source = config.train.distill_from
        if not source:
            continue
        earlier = [(out / recipe.folder(j)).resolve() for j in range(i)]
        where = Path(source).resolve()
        if any(folder == where or folder in where.parents for folder in earlier):
            continue
        try:
            teacher_file(source, out / recipe.folder(i))
        except (FileNotFoundError, TeacherError) as exc:
            said = f"{exc}{_teacher_beside(recipe, source)}"
            raise ConfigError(f"ensemble member {i + 1} ({recipe.members[i].recipe}): {said}") from None


def _teacher_beside(recipe: EnsembleRecipe, source: str) -> str:
    """Advice for a relative teacher missing from the current folder that lies beside the ensemble recipe, as a
    member's recipe file would be found: a setting is read from the current folder (the module's docstring)."""
    folder = recipe._folder if recipe.file else None  # a built-in's folder holds recipes alone
    beside = folder / source if folder is not None and not Path(source).is_absolute() else None
    if beside is None or not checkpoint_file(beside).is_file():
        return ""
    return (
        f"; a member's `set` is read as --set is, from the current folder: the ensemble recipe's folder holds "
        f"{beside}, so name it distill_from={beside}"
    )


def _check_run_lengths(recipe: EnsembleRecipe, configs: list[Config], starting: list[int]) -> WarnedOnce:
    """The refusals of members ``starting`` that need their training images (``preflight.check_run_lengths``), made
    before the first member trains rather than after the ones before it. A member under way has passed them.
    Returns the warnings their data's reading and split said once for all."""
    names = [_member_name(recipe, i) for i in starting]
    with warned_once("ensemble member") as warned:
        check_run_lengths([configs[i] for i in starting], names, warned)
    return warned


def _under_way(recipe: EnsembleRecipe, out: Path, index: int, resume: bool) -> bool:
    """Whether member ``index`` continues a run of its folder rather than starting one."""
    return resume and (out / recipe.folder(index) / LAST_FILE).is_file()


def _train_members(recipe: EnsembleRecipe, out: Path, overrides: list[str], resume: bool) -> dict[str, Any]:
    configs, built = _built_members(recipe, overrides)  # every member is checked before the first one trains
    _check_teachers(recipe, configs, out)
    resolved = _resolved(recipe, overrides)
    started = started_run(out) if resume else None
    if started is not None and _what_it_computes(started) != _what_it_computes(resolved):
        raise ConfigError(
            f"{out} holds an ensemble run of another recipe or other overrides, so it cannot be continued "
            f"with this one (started: {json.dumps(started)}; asked: {json.dumps(resolved)})"
        )
    checked = _check_run_lengths(
        recipe, configs, [i for i in range(len(configs)) if not _under_way(recipe, out, i, resume)]
    )
    out.mkdir(parents=True, exist_ok=True)
    if not resume:  # started over: the old joined network, its summary and every member's run go first
        # and a single network's run that --force replaces: its last.pt would make the join refuse best.pt
        clear_run(out, (*RUN_FILES, CONFIG_FILE, TEACHER_FILE))
        for i in range(len(configs)):
            clear_run(out / recipe.folder(i))
    # A run continued from another place keeps its record until its first member has accepted the move (its
    # data found again): a refused move must not leave its data.root in the record `resume` quotes.
    recorded = started == resolved
    if started is None:
        write_text_atomic(out / ENSEMBLE_RUN_FILE, dump_yaml(resolved))
        recorded = True
    summaries = []
    for i, (member, config) in enumerate(zip(recipe.members, configs)):
        folder = out / recipe.folder(i)
        print(f"ensemble member {i + 1}/{len(configs)}: {member.recipe} -> {folder}", flush=True)
        # each member's training builds its configuration and reads and splits the data, as the checks did
        # as the checks named it: a warning told of other members only is said as this one meets it
        with built.not_again(_member_name(recipe, i)), checked.not_again(_member_name(recipe, i)):
            if _under_way(recipe, out, i, resume):
                summaries.append(resume_run(folder, expected=config))
            else:
                summaries.append(train(config, folder))
        if not recorded:
            write_text_atomic(out / ENSEMBLE_RUN_FILE, dump_yaml(resolved))
            recorded = True
    folders = [out / recipe.folder(i) for i in range(len(configs))]
    meta = join_checkpoints(folders, out / BEST_FILE, [m.tta for m in recipe.members], recipe.fit, replace=True)
    summary = {
        "run": str(out),
        "arch": ENSEMBLE_ARCH,
        "recipe": recipe.name,
        "members": [
            {**s, "recipe": m.recipe, "tta": m.tta, "sha256": joined["checkpoint_sha256"]}
            for s, m, joined in zip(summaries, recipe.members, meta["members"])
        ],
        # The members' own training time, summed: what one machine training them in turn spends.
        "train_time_s": sum(s["train_time_s"] for s in summaries),
        "checkpoint": str(out / BEST_FILE),
    }
    write_text_atomic(out / SUMMARY_FILE, json.dumps(summary, indent=2))
    return summary

"""The recipes: one found by name or path and read, each mistake in it said as the recipe's, and a run's Config
built from it and the command line's overrides.
"""

from __future__ import annotations

import difflib
import logging
from pathlib import Path
from typing import Any

import yaml

from inference.messages import exception_summary

from .config import MERGED_SECTIONS, Config, ConfigError
from .config_checks import unused_settings
from .config_overrides import apply_overrides
from .config_validation import validate_config
from .config_yaml import YamlMistake, read_yaml, yaml_problem
from .models import MODELS

RECIPES_DIR = Path(__file__).parent / "recipes"
# the configuration's warnings print under one logger name (WARNING training.config: ...), wherever they are raised
log = logging.getLogger("training.config")


# The top-level key that makes a recipe an ensemble recipe (training/ensemble_recipe.py): members, not a network.
ENSEMBLE_KEY = "ensemble"


def _a_model(name: str) -> str:
    """Where ``name`` is a registered model without a recipe of its own (res2net50, resnet18, a zoo's variants),
    how to train it: a recipe names the schedule, ``model.name`` the network."""
    if name not in MODELS:
        return ""
    return f": {name} is a model, trained with a recipe and --set model.name={name}"


def _recipe_files() -> dict[str, Path]:
    return {p.stem: p for p in sorted(RECIPES_DIR.glob("*.yaml"))}


def is_ensemble_recipe(name_or_path: str) -> bool:
    return ENSEMBLE_KEY in _read_recipe(name_or_path)


def check_recipe(name_or_path: str) -> None:
    """Refuse a recipe that cannot be read, as ``train`` does (a typo with its did-you-mean): a command building
    several runs from it says so once, not as the first run's mistake."""
    _read_recipe(name_or_path)


def list_recipes() -> list[str]:
    """The built-in recipes that train one network."""
    return [name for name in _recipe_files() if not is_ensemble_recipe(name)]


def list_ensemble_recipes() -> list[str]:
    """The built-in recipes that train several networks and join them (training/ensemble_recipe.py)."""
    return [name for name in _recipe_files() if is_ensemble_recipe(name)]


def _read_recipe(name_or_path: str) -> dict[str, Any]:
    path = Path(name_or_path)
    # a folder (training/recipes, a tab completion stopped short) is not "no recipe"; a built-in's name still wins
    # over a folder of that name in the current one (a run folder)
    if path.is_dir() and name_or_path not in _recipe_files():
        inside = sorted(p.name for p in path.glob("*.y*ml"))
        shown = f" (in it: {', '.join(inside[:8])}{' ...' if len(inside) > 8 else ''})" if inside else ""
        raise ConfigError(f"recipe {name_or_path} is a folder: give a recipe's YAML file{shown} or a built-in name")
    if not path.suffix:
        path = RECIPES_DIR / f"{name_or_path}.yaml"
    if Path(name_or_path).suffix and not path.is_file():  # a file the user named
        where = "is a folder" if path.is_dir() else "does not exist"
        if where == "does not exist" and name_or_path == path.name and path.stem in _recipe_files():
            raise ConfigError(f"recipe file {name_or_path} {where}; the built-in recipe is --recipe {path.stem}")
        raise ConfigError(f"recipe file {name_or_path} {where}; built-in recipes: {', '.join(_recipe_files())}")
    if not path.is_file():
        if Path(f"{name_or_path}.yaml").is_file():  # a path to a recipe without its suffix (a tab completion)
            raise ConfigError(f"no recipe {name_or_path!r}: a recipe file is named whole, --recipe {name_or_path}.yaml")
        close = [name for name in _recipe_files() if name.startswith(f"{name_or_path}_") or name_or_path in name]
        # resnet9_half_cup, resnet9-half-cpu: a typo, which no name holds whole
        close = close or difflib.get_close_matches(name_or_path.replace("-", "_"), _recipe_files(), n=1, cutoff=0.8)
        hint = f" (recipes named like it: {', '.join(close)})" if close else ""
        raise ConfigError(
            f"no recipe {name_or_path!r}{_a_model(name_or_path)}{hint}; built-in recipes: {', '.join(_recipe_files())}"
        )
    try:
        raw = read_yaml(path.read_text())
    except YamlMistake as exc:
        line = f", line {exc.line}" if exc.line is not None else ""
        raise ConfigError(f"recipe {str(path)!r}{line}: {exc.problem}") from exc
    except yaml.YAMLError as exc:
        # yaml's own text names the file "<unicode string>" and puts the problem on a line after its context
        said = _left_open(exc) or yaml_problem(exc).removeprefix("not YAML: ")
        raise ConfigError(f"recipe {str(path)!r} is not a YAML file: {said}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"recipe {str(path)!r} is not a YAML file: {exception_summary(exc)}") from exc
    if raw is None:  # an empty file would otherwise train every default (se_resnet18) as if that were asked
        raise ConfigError(f"recipe {str(path)!r} is empty: it names no model and no settings")
    if not isinstance(raw, dict):
        raise ConfigError(f"recipe {str(path)!r} is not a mapping of sections")
    raw.setdefault("recipe", path.stem)
    return raw


# what yaml's context names of a thing opened on a line it marks and closed later
_OPENED = ("flow sequence", "flow mapping", "quoted scalar")


def _left_open(exc: yaml.YAMLError) -> str | None:
    """A bracket or quote a recipe leaves open, said with the line it was opened on; None for any other problem.
    yaml finds it at the end of the text, a line past the recipe's last, which is no line to mend."""
    if not isinstance(exc, yaml.MarkedYAMLError) or exc.problem_mark is None or exc.context_mark is None:
        return None
    end = exc.problem_mark
    if not (exc.context and end.buffer and end.index >= len(end.buffer) - 1):
        return None
    what = exc.context.split(" a ", 1)[-1]  # "while parsing a flow sequence"
    if what == "flow node":  # an item awaited after a comma: its mark is the end, not where the bracket opened
        return f"{exc.problem}: a [ or {{ is never closed"
    if what not in _OPENED:  # an alias, anchor or tag cut short by the end is nothing left open
        return None
    return f"{exc.problem}: the {what} begun at line {exc.context_mark.line + 1} is never closed"


def load_recipe(name_or_path: str) -> dict[str, Any]:
    """A network recipe's raw settings (an ensemble recipe is refused: it names other recipes, not settings)."""
    raw = _read_recipe(name_or_path)
    if ENSEMBLE_KEY in raw:
        raise ConfigError(
            f"{raw['recipe']!r} is an ensemble recipe (it trains several networks and joins them): train it with "
            f"`python -m training train --recipe {name_or_path}`; its members' recipes are the ones to build"
        )
    for section in ("model", *MERGED_SECTIONS):
        if raw.get(section, {}) is None:  # `train:` with nothing under it: no settings of that section
            del raw[section]
        elif not isinstance(raw.get(section, {}), dict):
            # said here: an override of the section would otherwise be blamed for it ("not a section")
            raise ConfigError(
                f"recipe {name_or_path!r}: {section} is not a mapping of settings (it is {raw[section]!r}); write "
                f"it as {section}: {{key: value, ...}}"
            )
    return raw


def load_ensemble_recipe_raw(name_or_path: str) -> dict[str, Any]:
    raw = _read_recipe(name_or_path)
    if ENSEMBLE_KEY not in raw:
        raise ConfigError(f"{raw['recipe']!r} trains one network, not an ensemble (no {ENSEMBLE_KEY!r} section)")
    return raw


def build_config(recipe: str | None = None, overrides: list[str] | None = None, what: str = "") -> Config:
    """``what``: whose configuration it is where a command builds several (an ensemble member, an ablation
    variant), said before each warning."""
    raw = _defaults_unset(load_recipe(recipe)) if recipe else {}
    loaded = raw.get("recipe", Config.model_fields["recipe"].default)
    config = validate_config(apply_overrides(raw, overrides or []))
    if config.recipe != loaded and config.recipe in _recipe_files():
        # recipe= names the run (its folder, its checkpoint's and model card's record), and nothing else
        raise ConfigError(
            f"--set recipe={config.recipe} would only name this run so; it would train {loaded}'s settings. To train "
            f"the recipe {config.recipe}, give --recipe {config.recipe}"
        )
    # said here, where the fields set are the recipe's and the overrides' alone: a config read back from a
    # checkpoint sets every field
    for unused in unused_settings(config):
        log.warning("%s%s", f"{what}: " if what else "", unused)
    return config


_UNSET = object()  # a key that is no setting: kept, to be refused by name


def _defaults_unset(raw: dict[str, Any]) -> dict[str, Any]:
    """``raw`` without the default values it holds, if it holds every setting: a run's config.yaml given back as
    --recipe (to train that run again) sets every field, and each one its optimizer or schedule does not read would
    be warned of as if chosen (a dozen warnings for an SGD run). A hand-written recipe is taken as written."""
    defaults = Config().model_dump(mode="json")
    sections = {name: raw.get(name) for name in MERGED_SECTIONS}
    if not all(isinstance(given, dict) and given.keys() >= defaults[name].keys() for name, given in sections.items()):
        return raw
    return {
        **raw,
        **{
            name: {field: value for field, value in given.items() if defaults[name].get(field, _UNSET) != value}
            for name, given in sections.items()
            if isinstance(given, dict)
        },
    }

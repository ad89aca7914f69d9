"""The refusals a configuration meets before it trains: a network that cannot take its images or options (before any
data is read), data or a run length that does not fit (for every run of an ensemble or ablation before the first
trains), and a run folder inside the images it trains on."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path

import torch

from inference.errors import UsageError
from inference.messages import and_listed

from .config import Config, ConfigError
from .config_recipes import build_config
from .config_validation import did_you_mean
from .data import DATASETS, DatasetError, ImageArrays
from .models import BUILD_ERRORS, ImageClassifier, UnknownArgument, argument_error, create_model, size_refusal
from .models.whitening import dirac_init_, whitening_layers
from .muon import filters_by_normalisation
from .run_data import check_trainable, read_data, read_key, split_data
from .run_length import SettingsRefused, check_run_length, named, refuse

log = logging.getLogger("training")
# where building and checking a configuration warn (config_recipes; this module and run_data; the split in data):
# not the loggers of the data readers, whose warnings come once per dataset read, not once per run
CONFIG_WARNERS = ("training.config", "training", "training.data")


class _Held(logging.Filter):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True
        self.records.append(record)
        return False


class _Told(logging.Filter):
    def __init__(self, told: set[tuple[str, int, str]]) -> None:
        super().__init__()
        self.told = told

    def filter(self, record: logging.LogRecord) -> bool:
        return (record.name, record.levelno, record.getMessage()) not in self.told


class WarnedOnce:
    """The warnings of several runs' configurations built or checked together (an ablation's variants, an ensemble
    recipe's members), held back and each distinct one said once: as one run says it where every run gets it, else
    naming the runs that do ("variants 'lr=0.1' and 'lr=0.2': ..."). Said per run, ten identical lines buried the
    one that differed. ``kind``: the word each run's name starts with ("variant" in "variant 'lr=0.1'")."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.runs: list[str] = []
        self.said: dict[tuple[str, int, str], list[str]] = {}
        # by run: a warning told for some runs only ("variant 'a': ...") is not one another run has been told of
        self.told: dict[str, set[tuple[str, int, str]]] = {}

    @contextmanager
    def of(self, name: str) -> Iterator[None]:
        """Hold the warnings said while run ``name`` (as a refusal names it) is built or checked; a run may be
        held more than once (read for its evaluation split, then checked), and counts once."""
        self.runs += [name] if name not in self.runs else []
        held, loggers = _Held(), [logging.getLogger(logger) for logger in CONFIG_WARNERS]
        for logger in loggers:
            logger.addFilter(held)
        try:
            yield
        finally:
            for logger in loggers:
                logger.removeFilter(held)
            for record in held.records:
                whose = self.said.setdefault((record.name, record.levelno, record.getMessage()), [])
                whose += [name] if name not in whose else []

    @contextmanager
    def not_again(self, name: str) -> Iterator[None]:
        """Drop the warnings already told of run ``name`` (as ``of`` named it), said again as it trains (its data
        read and split anew, and warned of as the checks were); a warning not told of it is said as it comes."""
        told = _Told(self.told.get(name, set()))
        loggers = [logging.getLogger(logger) for logger in CONFIG_WARNERS]
        for logger in loggers:
            logger.addFilter(told)
        try:
            yield
        finally:
            for logger in loggers:
                logger.removeFilter(told)

    def say(self) -> None:
        for (logger, level, text), whose in self.said.items():
            for name in whose:
                self.told.setdefault(name, set()).add((logger, level, text))
            if len(whose) == len(self.runs) > 1:
                logging.getLogger(logger).log(level, "%s", text)
                continue
            kind = self.kind if len(whose) == 1 else f"{self.kind}s"
            labels = [name.removeprefix(f"{self.kind} ") for name in whose]
            logging.getLogger(logger).log(level, "%s %s: %s", kind, and_listed(labels), text)
        self.said.clear()


@contextmanager
def warned_once(kind: str) -> Iterator[WarnedOnce]:
    """A ``WarnedOnce`` whose warnings are said as the block ends, a refusal's too (before it is told)."""
    once = WarnedOnce(kind)
    try:
        yield once
    finally:
        once.say()


def buildable_config(recipe: str, overrides: list[str], what: str, warned: WarnedOnce) -> Config:
    """``build_config``'s configuration, its network built and given one image (a --set key that is no field
    becomes a model argument, which only building the network refuses); a refusal names ``what`` (an ensemble
    member, an ablation variant), so that it comes before anything trains and says which; its warnings are held
    in ``warned`` under that name, unprefixed, to be said once for all runs."""
    try:
        with warned.of(what):
            config = build_config(recipe, overrides)
        check_network_takes_its_input(config)
    except ConfigError as exc:
        raise ConfigError(f"{what}: {exc}") from exc
    return config


def check_run_lengths(configs: list[Config], names: list[str], warned: WarnedOnce | None = None) -> None:
    """The refusals of each run that need its training images (data no classifier can learn from, a batch larger
    than the split, a lookahead period longer than the run; ``run_length``), made before the first of several
    runs trains rather than after the ones before it, every run's problems in one refusal. Each distinct data
    setting is read once; a folder dataset's cache then serves the run's own read. One process: ensembles and
    ablations refuse torchrun. ``warned``: where each run's warnings are held, to be said once for all."""
    read: dict[tuple, ImageArrays | UsageError] = {}
    problems: list[UsageError] = []
    for config, name in zip(configs, names):
        with warned.of(name) if warned is not None else nullcontext():
            problems += _run_length_problems(config, name, read)
    refuse(problems)


def _run_length_problems(config: Config, name: str, read: dict[tuple, ImageArrays | UsageError]) -> list[UsageError]:
    key = read_key(config)
    try:
        if key not in read:
            try:
                read[key] = read_data(config)
            except DatasetError as exc:  # the same for every run on these data: said once
                read[key] = exc
                raise
        full = read[key]
        if isinstance(full, UsageError):
            return []
        train_data, val_data = split_data(config, full, world_size=1)
        check_trainable(train_data, val_data, config.data.root)
        check_run_length(config, len(train_data))
    except SettingsRefused as exc:
        return [named(name, problem) for problem in exc.problems]
    except (ConfigError, DatasetError) as exc:
        return [named(name, exc)]
    return []


def check_network_takes_its_input(config: Config) -> None:
    """Build the network once and pass it a blank image of ``data.image_size``, before any data is read: a
    network that cannot take that size (a ViT built for another, a stack of poolings too deep for it) is refused
    now, naming the setting, rather than at the first batch after the data has loaded."""
    name, args, size = config.model.name, config.model.args, config.data.image_size
    try:
        model = create_model(name, 2, **args).eval()
    except UnknownArgument as exc:
        # a bare --set key that is no setting lands here: a mistyped setting (epohcs) as much as a model argument
        raise ConfigError(f"{exc}{did_you_mean(exc.unknown, exc.taken)}") from exc
    except BUILD_ERRORS as exc:  # named with the model and its arguments
        raise ConfigError(argument_error(name, args, exc)) from exc
    for side in sorted({size, *config.augment.progressive_sizes.values()}):
        setting = "data.image_size" if side == size else "augment.progressive_sizes"
        refused = size_refusal(model, side)
        if refused is not None:
            raise ConfigError(f"model {name!r} cannot take {side}x{side} images ({setting}): {refused}") from refused
    check_options_suit_the_network(model, config)


def check_options_suit_the_network(model: ImageClassifier, config: Config) -> None:
    """Options that only some networks can take, tried on a throwaway build of the network before any data is read:
    each refuses, naming its setting, where it would change nothing (whiten_bias_epochs is only warned of)."""
    size = config.data.image_size
    if config.optim.name == "muon":
        filters_by_normalisation(model, torch.zeros(2, 3, size, size))
    if config.model.dirac_init:
        dirac_init_(model.backbone)
    if config.train.whiten_bias_epochs is not None and not whitening_layers(model):
        # said, not refused: an ablation's baseline turns the whitening of a recipe that sets it off
        log.warning(
            "train.whiten_bias_epochs %d is unused: model %r has no patch-whitening layer whose bias it would train",
            config.train.whiten_bias_epochs,
            config.model.name,
        )


def inside_the_data(dataset: str, root: str | Path, out: Path) -> bool:
    """Whether ``out`` is (or is inside) the image folder of a dataset that reads every image file under its root
    (``DatasetKind.reads_image_files``): a PNG written there (a run's training_curves.png, a report's figures) would
    be read back as an image, making its folder a class of its own (or an image of one) for every later run on that
    data."""
    root = Path(root)
    # an unknown dataset is refused where it is read; an archive cannot be written into; absent data is said later
    if dataset not in DATASETS or not DATASETS.get(dataset).reads_image_files or not root.is_dir():
        return False
    out, root = out.resolve(), root.resolve()
    return out == root or root in out.parents


def check_out_of_the_data(config: Config, out_dir: Path) -> None:
    """Refuse a run folder inside the image folder it trains on (``inside_the_data``)."""
    if inside_the_data(config.data.dataset, config.data.root, out_dir):
        raise ConfigError(
            f"--out {out_dir} is inside the dataset {config.data.root} (data.root): the run's training_curves.png "
            "would be read as an image of it by later runs; train into a folder outside it"
        )

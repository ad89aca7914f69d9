"""Which samples a model is scored on: a :class:`DataSpec` (``resolve_data``: by default the model's own
validation split), and the data's labels in the model's class order, its classes matched by name.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from inference.classes import ClassMatcher, folded
from inference.errors import UsageError
from inference.fits import DEFAULT_FIT
from inference.messages import and_listed, counted

from ..data import SPLITS, DatasetError, ImageArrays, load_split
from ..data.split import SplitTooLarge
from ..dataset_cache import DEFAULT_CACHE_DIR
from .sources import ModelSource

log = logging.getLogger("training.reports")


@dataclass
class DataSpec:
    """Which samples a model is evaluated on: enough to reload exactly the same split."""

    dataset: str
    root: str
    split: str = "val"
    val_size: int = 5000
    split_seed: int = 42
    image_size: int = 32
    cache_dir: str | None = DEFAULT_CACHE_DIR
    fit: str = DEFAULT_FIT  # how a folder's images of another shape are fitted (inference.fits)
    # the root is the one the model records (no --data given): where it is gone, the data may have moved
    recorded_root: bool = False

    def load(self) -> ImageArrays:
        if self.split not in SPLITS:
            raise UsageError(f"unknown split {self.split!r}; valid: {', '.join(SPLITS)}")
        try:
            return load_split(
                self.dataset,
                self.root,
                self.split,
                self.val_size,
                self.split_seed,
                self.cache_dir,
                self.image_size,
                self.fit,
            )
        except SplitTooLarge as exc:
            # the model's own held-out size, applied to a folder of the user's: say how to score all of it
            raise DatasetError(
                f"{self.root} holds {counted(exc.images, 'image')}, and the {self.split} split holds out "
                f"{self.val_size} (the model's own held-out size, or --val-size): to score every image of this data "
                "pass --split all, or a smaller --val-size"
            ) from None
        except DatasetError as exc:
            if self.recorded_root and not os.path.exists(self.root):
                raise DatasetError(f"{exc} (the recorded data folder: pass --data ROOT where it lies now)") from None
            raise

    def record(self) -> dict[str, Any]:
        """The split as a report's JSON keeps it: what reloads it (not where its root came from)."""
        kept = asdict(self)
        del kept["recorded_root"]
        return kept

    def describe(self) -> str:
        extra = f", {self.val_size} held out with seed {self.split_seed}" if self.split in ("train", "val") else ""
        return f"{self.dataset} `{self.root}`, split **{self.split}**{extra}"


def resolve_data(
    source: ModelSource | None,
    dataset: str | None = None,
    root: str | None = None,
    split: str = "val",
    val_size: int | None = None,
    split_seed: int | None = None,
    cache_dir: str | None = None,
    defaults: dict[str, Any] | None = None,
) -> DataSpec:
    """The evaluation split: explicit arguments first, then ``defaults``, then what the model records."""
    if split not in SPLITS:
        raise UsageError(f"unknown split {split!r}; valid: {', '.join(SPLITS)}")
    known: dict[str, Any] = {}
    for layer in (source.data_defaults if source else {}, defaults or {}):
        known.update({k: v for k, v in layer.items() if v is not None})
    given = {"dataset": dataset, "root": root, "val_size": val_size, "split_seed": split_seed, "cache_dir": cache_dir}
    known.update({k: v for k, v in given.items() if v is not None})
    if not known.get("root") or not known.get("dataset"):
        raise UsageError("the model does not record its dataset: pass --dataset NAME and --data ROOT")
    return DataSpec(
        dataset=known["dataset"],
        root=str(known["root"]),
        split=split,
        val_size=int(known.get("val_size", 5000)),
        split_seed=int(known.get("split_seed", 42)),
        image_size=source.image_size if source else int(known.get("image_size", 32)),
        cache_dir=known.get("cache_dir", DEFAULT_CACHE_DIR),
        fit=known.get("fit", DEFAULT_FIT),
        recorded_root=root is None,
    )


def no_samples(spec: DataSpec, val_size_given: bool, command: str) -> UsageError:
    """The refusal of a split that holds no images (predicting on none ends in torch.cat's traceback), saying what
    emptied a val split: the --val-size given, or the run's own data.val_size of 0."""
    why = ""
    if spec.split == "val" and val_size_given:
        why = f" (--val-size {spec.val_size} holds out none: give a larger one, or {command} on --split train or all)"
    elif spec.split == "val":
        why = f" (the run held out none: data.val_size=0; {command} it on other images, --data ROOT --split all)"
    return UsageError(f"{spec.dataset} {spec.root} split {spec.split!r} has no samples{why}")


def sample_fingerprint(data: ImageArrays) -> str:
    """A digest of the images and labels in order: two reports can be paired only if theirs match. The labels
    are indices into ``data.classes``: the same images under another class order digest otherwise
    (``fingerprint_by_name`` does not)."""
    return data.fingerprint()


def fingerprint_by_name(data: ImageArrays, classes: Sequence[str]) -> str:
    """A digest of the images in order and each one's class by name (``folded``), ``data.labels`` being indices
    into ``classes``: equal for the same images scored by two models that list the same classes in other orders
    (a folder's sorted by name, CIFAR's own), so that their predictions can be paired by class name."""
    names = sorted({folded(c) for c in classes})
    rank = np.array([names.index(folded(c)) for c in classes], dtype=np.int64)
    digest = hashlib.sha256()
    digest.update(str(data.images.shape).encode())
    digest.update(np.ascontiguousarray(data.images).tobytes())
    digest.update("\n".join(names).encode())
    digest.update(np.ascontiguousarray(rank[data.labels]).tobytes())
    return digest.hexdigest()


def match_classes(source: ModelSource, data: ImageArrays, spec: DataSpec) -> tuple[ImageArrays, str | None]:
    """The data with its labels in the model's class order, matched by name (``inference.classes.ClassMatcher``:
    exactly, else ignoring case and Unicode normalisation where that leaves one class), so that a folder holding
    some of the model's classes, or its class folders spelled ``Cat/``, is scored right; a class the model does not
    know, or that is two of its classes but for case (``CAR/`` for ``Car`` and ``car``), is refused. Only when no
    name matches at all and the counts agree (data whose classes are not named as the model's) is the label order
    assumed equal, with a note.
    Returns the data and a note for the report, or None where nothing needed saying."""
    model, given = list(source.classes), list(data.classes)
    if given == model:
        return data, None
    matcher = ClassMatcher(model)
    found = [matcher.index(c) for c in given]
    unknown = [c for c, i in zip(given, found) if i is None]
    if _order_assumed(model, given, found):
        message = f"no class name of the data is one of the model's ({names_text(given, 5)}): label order assumed equal"
        log.warning(message)
        return data, message
    if unknown:
        raise UsageError(
            f"{spec.dataset} {spec.root} holds classes {source.path} does not predict: "
            f"{', '.join(name + matcher.meant(name) for name in unknown[:5])}"
            f"{', ...' if len(unknown) > 5 else ''} (its classes: {names_text(model)}); a folder's class folders "
            "are matched to the model's classes by name"
        )
    index = [i for i in found if i is not None]  # all of them: an unknown class was refused above
    clashes = _clashes(model, given, index)
    if clashes:
        raise UsageError(f"{spec.dataset} {spec.root} has {clashes}")
    labels = np.asarray(index, dtype=np.int64)[data.labels]
    mapped = ImageArrays(data.images, labels, model)
    missing = [c for i, c in enumerate(model) if i not in set(index)]
    notes = []
    if [model[i] for i in index] != given:
        case = ", ignoring case" if any(c not in model for c in given) else ""
        notes.append(f"the data's class folders are matched to the model's classes by name{case}")
    if missing:
        more = ", ..." if len(missing) > 5 else ""
        notes.append(
            f"the data holds {len(given)} of the model's {len(model)} classes (none of "
            f"{', '.join(missing[:5])}{more}): those have no per-class accuracy, and a prediction of one is wrong"
        )
    return mapped, "; ".join(notes) or None


def _clashes(model: list[str], given: list[str], index: list[int]) -> str | None:
    """What a refusal says of the data's class folders that match one class of the model alike (``Cat/`` beside
    ``cat/``): each such class and its folders, not the folders that match one class each (a hundred of them would
    bury the pair); None where every class of the model has one folder at most."""
    folders: dict[int, list[str]] = {}
    for name, i in zip(given, index):
        folders.setdefault(i, []).append(name)
    clashing = [(model[i], names) for i, names in folders.items() if len(names) > 1]
    if not clashing:
        return None
    if len(clashing) == 1:
        cls, names = clashing[0]
        many = "two" if len(names) == 2 else str(len(names))
        fix = "one" if len(names) == 2 else "all but one"
        return f"{many} class folders for the model's class {cls}: {and_listed(names)}; rename or merge {fix}"
    each = names_text([f"{cls} ({and_listed(names)})" for cls, names in clashing], 5)
    return f"more than one class folder for each of the model's classes {each}; rename or merge all but one of each"


def _order_assumed(model: list[str], given: list[str], found: list[int | None]) -> bool:
    """No class name of the data is one of the model's, and there are as many: the label order is taken as equal."""
    return all(i is None for i in found) and len(given) == len(model)


def held_classes(model: Sequence[str], data_classes: Sequence[str]) -> set[int]:
    """The indices of the model's classes that data of ``data_classes`` (its class folders, before
    ``match_classes``) holds images of somewhere, whichever split is scored."""
    model, given = list(model), list(data_classes)
    matcher = ClassMatcher(model)
    found = [matcher.index(c) for c in given]
    if given == model or _order_assumed(model, given, found):
        return set(range(len(model)))
    return {i for i in found if i is not None}


def names_text(names: Sequence[str], shown: int = 10) -> str:
    """Class names for a one-line message: the first ``shown``, then how many in all (CIFAR-100's hundred would
    bury the line's point)."""
    names = list(names)
    if len(names) <= shown:
        return ", ".join(names)
    return f"{', '.join(names[:shown])}, ... ({len(names)} in all)"


def same_classes(a: Sequence[str], b: Sequence[str]) -> bool:
    """Whether two models' (or reports') classes are the same ones in the same order, their names compared as a
    folder's are matched to a model's (``folded``: ignoring case and Unicode normalisation): a prediction is an
    index into its own model's classes, so two sides' predictions pair, or average, only where this holds."""
    return len(a) == len(b) and all(folded(x) == folded(y) for x, y in zip(a, b))


def class_order(a: Sequence[str], b: Sequence[str]) -> np.ndarray | None:
    """The index into ``a`` of each of ``b``'s classes, matched by name as ``same_classes`` compares them, where
    the two hold the same classes in some order; None where they do not (a name only one of them has, or two
    names of one list that fold alike, which no name could tell apart)."""
    in_a, in_b = [folded(c) for c in a], [folded(c) for c in b]
    if len(in_a) != len(in_b) or len(set(in_a)) != len(in_a) or set(in_a) != set(in_b):
        return None
    where = {name: i for i, name in enumerate(in_a)}
    return np.array([where[name] for name in in_b], dtype=np.int64)


def in_class_order(data: ImageArrays, own: Sequence[str], classes: Sequence[str]) -> ImageArrays:
    """``data``, whose labels index ``own``, with its labels as indices into ``classes``: the same classes in
    another order (``class_order`` holds)."""
    order = class_order(classes, own)
    if order is None:
        raise ValueError(f"not the same classes: {list(own)} and {list(classes)}")
    return ImageArrays(data.images, order[data.labels], list(classes))

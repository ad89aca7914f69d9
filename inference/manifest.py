"""The schema of ``models/manifest.json`` and of the metadata each ONNX file carries about itself.

This module is the contract between export (which writes it) and the service
and batch scorer (which read it); it needs neither torch nor ``training``.
"""

from __future__ import annotations

import codecs
import errno
import hashlib
import json
import logging
import os
import shlex
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal, Sequence, get_args

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from .devices import DeviceKind
from .errors import UsageError
from .files import write_text_atomic
from .fits import LEGACY_FIT, FitName
from .messages import validation_problems
from .precisions import PrecisionName

log = logging.getLogger(__name__)

MANIFEST_NAME = "manifest.json"
# Key under which an ONNX file's metadata_props hold its ModelCard as JSON.
METADATA_KEY = "cifar_model_card"


class ManifestError(UsageError):
    """The manifest, or a file it lists, is missing, malformed or does not match its hash."""


class UnknownModel(UsageError, KeyError):
    """A model name the manifest does not list: the user's to correct; still a KeyError, as a lookup that fails
    is."""

    def __str__(self) -> str:  # KeyError's would quote the message
        return str(self.args[0]) if self.args else ""


class InputSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = "input"
    shape: tuple[int, int, int] = (3, 32, 32)  # C, H, W; the batch axis is dynamic
    layout: Literal["NCHW"] = "NCHW"
    color: Literal["RGB"] = "RGB"
    dtype: Literal["float32"] = "float32"
    scale: tuple[float, float] = (0.0, 1.0)  # pixel/255: the model normalises inside its graph
    resize: Literal["bilinear"] = "bilinear"
    # A card without one means every image was resized straight: the default says so. Exports
    # name theirs (inference.fits.DEFAULT_FIT unless the training run used another).
    fit: FitName = Field(
        default=LEGACY_FIT, description="how an image of another aspect ratio is fitted (a name from inference.fits)"
    )
    mean: tuple[float, float, float]  # applied inside the graph; recorded for reference
    std: tuple[float, float, float]

    @property
    def size(self) -> tuple[int, int]:
        return self.shape[1], self.shape[2]


CalibrationMethod = Literal["temperature", "none"]
CALIBRATION_METHODS: tuple[str, ...] = get_args(CalibrationMethod)


class Calibration(BaseModel):
    """How the graph turns its logits into calibrated confidences (not INT8 quantisation, whose
    calibration images ``source["calibration"]`` describes). The division is inside the graph:
    clients apply nothing, this records what was done."""

    model_config = ConfigDict(extra="forbid")

    method: CalibrationMethod = "none"
    temperature: float = Field(default=1.0, gt=0, description="the graph's last step divides the logits by it")
    fitted_on: str | None = Field(default=None, description="which samples and which logits T was fitted on")

    @model_validator(mode="after")
    def _none_is_one(self) -> "Calibration":
        if self.method == "none" and self.temperature != 1.0:
            raise ValueError(f"calibration method 'none' divides by nothing, yet temperature is {self.temperature}")
        return self


# A model's name: also its file's (NAME.onnx) and a URL path segment (/v2/models/NAME), so nothing that needs
# quoting in either.
MODEL_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
MODEL_FILE_PATTERN = MODEL_NAME_PATTERN.removesuffix("$") + r"\.onnx$"
MODEL_NAME_RULE = "1 to 64 letters, digits, '.', '_' or '-', starting with a letter or digit"


class ModelCard(BaseModel):
    """What a model is: stored in the manifest and in the ONNX file's own metadata."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    name: str = Field(pattern=MODEL_NAME_PATTERN)
    arch: str
    dataset: str
    classes: list[str] = Field(min_length=2)
    precision: PrecisionName  # a name from precisions.PRECISIONS
    input: InputSpec
    output: str = "logits"
    metrics: dict[str, Any] = Field(default_factory=dict)
    source: dict[str, Any] = Field(default_factory=dict)  # checkpoint, recipe, export tool versions
    # A card without a calibration record describes a graph without the division: the default says so.
    calibration: Calibration = Field(default_factory=Calibration)

    @model_validator(mode="after")
    def _metrics_have_accuracy(self) -> "ModelCard":
        if "val_top1" not in self.metrics:
            raise ValueError(f"model {self.name!r}: metrics must include val_top1")
        top1 = self.metrics["val_top1"]
        if isinstance(top1, bool) or not isinstance(top1, (int, float)) or not 0 <= top1 <= 1:
            raise ValueError(f"model {self.name!r}: metrics.val_top1 must be a fraction from 0 to 1, not {top1!r}")
        samples = self.metrics.get("val_samples")
        if samples is not None and (isinstance(samples, bool) or not isinstance(samples, int) or samples < 1):
            raise ValueError(
                f"model {self.name!r}: metrics.val_samples must be a whole number of images, not {samples!r}"
            )
        return self


class ModelEntry(ModelCard):
    # a file in the models folder itself: one elsewhere (../x) would be read, and deleted by `export remove`
    file: str = Field(pattern=MODEL_FILE_PATTERN)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")


class DefaultChoice(BaseModel):
    """The default model on one kind of device, and why it is that one (for /models, doctor and logs)."""

    name: str
    reason: str


class Manifest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    schema_version: Literal[1] = 1
    # The default on any device without an entry in ``defaults``: all a manifest without per-device defaults
    # has, and what a reader that knows only ``default`` uses.
    default: str
    defaults: dict[DeviceKind, str] = Field(
        default_factory=dict, description="the default per kind of device, where it differs from `default`"
    )
    models: list[ModelEntry] = Field(min_length=1)

    @model_validator(mode="after")
    def _consistent(self) -> "Manifest":
        names = [m.name for m in self.models]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"duplicate model names: {', '.join(duplicates)}")
        for role, name in [("default", self.default), *((f"default for {k}", n) for k, n in self.defaults.items())]:
            if name not in names:
                raise ValueError(f"{role} model {name!r} is not among the models ({', '.join(names)})")
        return self

    def default_for(self, kind: DeviceKind) -> DefaultChoice:
        """The one rule, for the service and the scorer alike: the device's own default, else ``default``."""
        if kind in self.defaults:
            return DefaultChoice(name=self.defaults[kind], reason=f"the manifest's default for {kind} hosts")
        return DefaultChoice(name=self.default, reason=f"the manifest's default (it names none for {kind} hosts)")

    def default_names(self) -> set[str]:
        """The models that are a default on some kind of device: none of them can be removed."""
        return {self.default, *self.defaults.values()}

    def get(self, name: str | None = None) -> ModelEntry:
        name = name or self.default
        for entry in self.models:
            if entry.name == name:
                return entry
        raise UnknownModel(f"unknown model {name!r}; available: {', '.join(m.name for m in self.models)}")


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def load_manifest(models_dir: str | Path, verify: bool = True) -> Manifest:
    """Parse and validate ``models_dir/manifest.json``; with ``verify``, check every file's sha256 too."""
    path = Path(models_dir) / MANIFEST_NAME
    if Path(models_dir).exists() and not Path(models_dir).is_dir():  # else "no model manifest at FILE/manifest.json"
        raise ManifestError(f"models folder {models_dir} is a file, not a folder")
    if path.exists() and not path.is_file():
        raise ManifestError(f"{path} is a folder (or a device), not a manifest file")
    if not path.is_file():
        # run from another folder, the default "models" is not the repository's: say where it was looked for
        here = "" if path.is_absolute() else f" (a relative folder is read from the current one, {Path.cwd()})"
        raise ManifestError(
            f"no model manifest at {path}{here}: give the models folder that holds one, or export a model first "
            "(python -m export ...)"
        )
    try:
        # an editor on Windows (Notepad, PowerShell's Set-Content) may start the file with a BOM, which JSON allows a
        # reader to skip and pydantic reports as "expected value at line 1 column 1" of a file that looks right
        manifest = Manifest.model_validate_json(path.read_bytes().removeprefix(codecs.BOM_UTF8))
    except ValidationError as exc:  # bad JSON, bad UTF-8 and bad fields alike, each named on one line
        raise ManifestError(f"invalid manifest {path}: {validation_problems(exc)}") from exc
    except OSError as exc:
        raise ManifestError(f"cannot read {path}: {exc.strerror or exc}") from exc
    if verify:
        verify_files(manifest, Path(models_dir))
    return manifest


def verify_files(manifest: Manifest, models_dir: Path) -> None:
    for entry in manifest.models:
        verify_file(entry, models_dir, manifest)


def file_problems(manifest: Manifest, models_dir: Path) -> dict[str, str]:
    """Each listed model whose file is missing or not the recorded one, with ``verify_file``'s message."""
    problems = {}
    for entry in manifest.models:
        try:
            verify_file(entry, models_dir, manifest)
        except ManifestError as exc:
            problems[entry.name] = str(exc)
        except OSError as exc:  # a file that cannot be read (permissions, a folder in its place)
            reason = exc.strerror or exc
            problems[entry.name] = f"model {entry.name!r}: file {models_dir / entry.file} cannot be read ({reason})"
    return problems


def verify_file(entry: ModelEntry, models_dir: Path, manifest: Manifest | None = None) -> None:
    """ManifestError when ``entry``'s file is missing or is not the file the manifest recorded. ``manifest``, the
    one listing ``entry``, tailors the advice to a default model, which `export remove` refuses."""
    file = models_dir / entry.file
    if not file.is_file():
        # a folder there (a copy or a mount gone wrong) is not a missing file: the fix differs
        there = "is a folder, not a file" if file.is_dir() else "is not a file" if file.exists() else "is missing"
        raise ManifestError(f"model {entry.name!r}: file {file} {there}")
    actual = sha256_file(file)
    if actual != entry.sha256:
        # export's commands default to ./models: a folder elsewhere (the service's CIFAR_MODELS_DIR) is named, or
        # `export remove` would drop a model of that name from ./models instead; a folder named -x would be read as
        # an option, ./-x is not
        folder = str(models_dir) if not str(models_dir).startswith("-") else f"./{models_dir}"
        flag = "" if models_dir.resolve() == Path("models").resolve() else f" --models-dir {shlex.quote(folder)}"
        raise ManifestError(
            f"model {entry.name!r}: file {file} does not match the manifest "
            f"(sha256 {actual[:12]}..., expected {entry.sha256[:12]}...): it is truncated, tampered with or stale; "
            f"{_mends(entry.name, flag, manifest)}"
        )


def _mends(name: str, flag: str, manifest: Manifest | None) -> str:
    """The ways to mend a model file that is not the recorded one. Dropping it is offered as `export remove`
    would take it: a default only once another model is the default, the only model not at all."""
    restore, export = "put the file as exported back", f"export it again with --replace{flag}"
    if manifest is None or name not in manifest.default_names():
        return f"{restore}, {export}, or drop it (python -m export remove {name}{flag})"
    if len(manifest.models) == 1:
        return f"{restore}, or {export}"
    return (
        f"{restore}, {export}, or drop it once another model is the default "
        f"({undefault_command(manifest, name)}{flag}, then python -m export remove {name}{flag})"
    )


def undefault_command(manifest: Manifest, name: str) -> str:
    """The `export default` command that leaves ``name`` a default on no kind of device: the plain default is
    replaced only by a plain one (``--for cuda`` leaves it the default elsewhere), a per-device default by one for
    its kinds (``--for cpu`` would leave it the cuda default)."""
    kinds = [] if name == manifest.default else sorted(k for k, n in manifest.defaults.items() if n == name)
    return "python -m export default OTHER" + "".join(f" --for {kind}" for kind in kinds)


# flock's answers on a file system that cannot lock a folder (NFS: EBADF; others: no locks at all)
_NO_FOLDER_LOCKS = {errno.EBADF, errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EINVAL}

# The models folders whose manifest this process is updating (``manifest_update``).
_updating: set[Path] = set()


@contextmanager
def manifest_update(models_dir: str | Path) -> Iterator[None]:
    """Hold ``models_dir``'s manifest for the body, which reads it, changes it and saves it: two commands doing so
    at once (two exports into one folder) would each save their own change over the other's, so the second
    waits for the first (an update takes milliseconds). An advisory flock on the folder itself, which leaves no
    lock file to ship, commit or take for a model. Readers take no part: the manifest is renamed into place
    whole, and the service reads it from a read-only folder."""
    import fcntl  # here: the readers (the service) need no locking, on a system with or without fcntl

    models_dir = Path(models_dir)
    if not models_dir.is_dir():  # no manifest to change: the body's load says what is missing
        yield
        return
    fd = os.open(models_dir, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError as exc:
            if exc.errno not in _NO_FOLDER_LOCKS:
                raise
            # NFS takes an exclusive lock only on a file open for writing, which a folder cannot be: the update
            # goes on unserialized, and says so
            log.warning(
                "cannot lock %s (%s): a command updating its manifest at the same time could undo this one's change",
                models_dir,
                exc.strerror or exc,
            )
        _updating.add(models_dir.resolve())
        try:
            yield
        finally:
            _updating.discard(models_dir.resolve())
    finally:
        os.close(fd)


def save_manifest(manifest: Manifest, models_dir: str | Path) -> Path:
    """Within ``manifest_update``, around the load that ``manifest`` was made from."""
    if Path(models_dir).resolve() not in _updating:
        raise RuntimeError(f"the manifest of {models_dir} saved outside manifest_update: an update could be lost")
    path = Path(models_dir) / MANIFEST_NAME
    refuse_read_only(path)
    write_text_atomic(path, json.dumps(manifest.model_dump(mode="json"), indent=2) + "\n")
    return path


def card_disagreements(
    entry: ModelEntry, card: ModelCard, fields: tuple[str, ...] = ("classes", "precision", "input")
) -> list[str]:
    """The ``fields`` in which a file's own card and its manifest entry disagree (the manifest is not hashed: an
    entry can be edited apart from its file). By default what the graph takes and answers, which serving needs."""
    return [field for field in fields if getattr(card, field) != getattr(entry, field)]


def refuse_read_only(manifest: Path) -> None:
    """ManifestError for a manifest no one may write (``chmod a-w``, to keep the models listed as they are): the
    rename that saves it replaces it all the same, even for a user who may not write it. The mode bits, not
    ``os.access``, which says yes to root and no to a teammate's 644 file in a shared folder."""
    try:
        mode = manifest.stat().st_mode
    except OSError:  # none yet: the first model of a folder
        return
    if not mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH):
        raise ManifestError(
            f"{manifest} is read-only, and changing the models listed would replace it: make it writable "
            "(chmod u+w) to change them there, or give another --models-dir"
        )


def remove_models(models_dir: str | Path, names: Sequence[str]) -> Manifest:
    """Take listed models out of the manifest, then delete their files: a server started in between finds a
    manifest naming only files that exist. A default, or every model, is refused (the manifest needs both)."""
    with manifest_update(models_dir):
        manifest = load_manifest(models_dir, verify=False)
        gone = [manifest.get(name) for name in dict.fromkeys(names)]  # UnknownModel naming the models
        for entry in gone:
            if entry.name in manifest.default_names():
                raise UsageError(
                    f"{entry.name} is a default model: make another one the default first "
                    f"({undefault_command(manifest, entry.name)})"
                )
        kept = [m for m in manifest.models if m not in gone]
        if not kept:
            raise UsageError("that would remove every model: a manifest lists at least one")
        manifest = Manifest.model_validate({**manifest.model_dump(), "models": [m.model_dump() for m in kept]})
        save_manifest(manifest, models_dir)
        for entry in gone:
            (Path(models_dir) / entry.file).unlink(missing_ok=True)
        return manifest


def set_default(models_dir: str | Path, name: str, kinds: Sequence[str] = ()) -> Manifest:
    """Make a listed model the default on those kinds of device, or (``kinds`` empty) on every kind: the
    per-device defaults go, or they would still overrule the plain one on their hosts."""
    with manifest_update(models_dir):
        manifest = load_manifest(models_dir, verify=False)
        # UnknownModel naming the models when it is not listed
        verify_file(manifest.get(name), Path(models_dir), manifest)
        if kinds:
            manifest = manifest.model_copy(update={"defaults": {**manifest.defaults, **{k: name for k in kinds}}})
        else:
            manifest = manifest.model_copy(update={"default": name, "defaults": {}})
        manifest = Manifest.model_validate(manifest.model_dump())
        save_manifest(manifest, models_dir)
        return manifest

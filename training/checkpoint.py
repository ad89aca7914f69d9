"""Checkpoints as plain dicts of tensors and primitives, written atomically and loaded with weights_only=True."""

from __future__ import annotations

import fcntl
import hashlib
import io
import os
import pickle
import re
import warnings
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Sequence

import torch

from inference.errors import UsageError
from inference.files import file_in_the_way, folders_to_make, process_running, remove_if_empty, write_atomic
from inference.manifest import MANIFEST_NAME
from inference.messages import exception_summary

from .distributed import is_main_process
from .models import ImageClassifier, create_model

# A run folder's files: the checkpoint that stands for the run, the last completed epoch's (what a resume
# continues from), and the record an ensemble recipe's run starts with (its members train in numbered
# sub-folders; BEST_FILE is written once the last has finished), and the summary a finished run leaves.
BEST_FILE = "best.pt"
LAST_FILE = "last.pt"
SUMMARY_FILE = "summary.json"
ENSEMBLE_RUN_FILE = "ensemble.yaml"
CONFIG_FILE = "config.yaml"  # the configuration a run trains, as YAML (its recipe, for a new run)
# What a run writes as it trains; a run started over removes the previous one's first, so that nothing of it
# (a best.pt, a summary saying it finished) passes for the new run's if the new one is stopped early.
# a run's config.yaml as a user edited it, kept aside when a resume writes back the configuration it started with
EDITED_CONFIG = "config.edited.yaml"
RUN_FILES = (LAST_FILE, BEST_FILE, SUMMARY_FILE, "history.json", "training_curves.png", EDITED_CONFIG)
# The lock of the process training in a run folder (``claimed_run``), holding its pid; removed when it lets go.
# Hidden, so the listings of a folder's files (a report's, an ablation's) pass over the one a killed run leaves,
# which holds nothing: the lock went with the process.
LOCK_FILE = ".lock"
# What every checkpoint's meta holds, whoever wrote it (a run, an ensemble, a recovered network): enough to
# rebuild the network and to name its classes and input.
META_KEYS = ("arch", "num_classes", "mean", "std", "model_args", "classes", "input_size")
META_KINDS: dict[str, type | tuple[type, ...]] = {
    "arch": str,
    "num_classes": int,
    "mean": (list, tuple),
    "std": (list, tuple),
    "model_args": dict,
    "classes": (list, tuple),
    "input_size": int,
}
# What a run's checkpoint holds beyond a network's (``Trainer.state``): where a resume goes on from. A checkpoint
# of a network alone (an ensemble, a recovered network, a slimmed copy) holds none of it.
TRAINING_STATE_KEYS = ("config", "epoch", "history", "best")
# Objects loading with weights_only constructs beyond torch's own: TorchVersion, a plain str subclass, which early
# checkpoints of this project stored.
_ALLOWED_GLOBALS: list[Callable[..., Any] | tuple[Callable[..., Any], str]] = [torch.torch_version.TorchVersion]


class CheckpointError(UsageError):
    """A file given as a checkpoint that is none this project can use (damaged, foreign, unreadable, its weights
    not fitting the network its meta describes), or a checkpoint's --out that would land where it must not."""


def clear_run(folder: str | Path, names: tuple[str, ...] = RUN_FILES) -> None:
    remove_stale_temporaries(folder)
    for name in names:
        (Path(folder) / name).unlink(missing_ok=True)


class RunInUse(UsageError):
    """A run folder another process is training in."""


# The run folders this process holds, so that a command and the trainer it calls claim one folder once.
_claimed: set[Path] = set()


@contextmanager
def claimed_run(folder: str | Path, make: bool = True) -> Iterator[None]:
    """Hold ``folder`` for this process's training while the body runs. Another command on the same folder (the
    same one started twice) is refused at once (``RunInUse``, naming this pid): the two would interleave their
    checkpoints and history, and a --force of one would remove the other's files. An advisory flock, which the
    system releases when the process ends however it ends, so a killed run leaves no claim to clear by hand.
    Under torchrun rank 0 alone claims it, as rank 0 alone writes there. The folders made for the lock are
    taken away again if the body leaves them empty: a run refused before it writes leaves no folder behind.
    Without ``make`` (a resume) a folder that is not there is neither made nor claimed: it holds no run to
    continue, which the body says."""
    folder = Path(folder)
    if not is_main_process() or folder.resolve() in _claimed or not (make or folder.is_dir()):
        yield
        return
    made = folders_to_make(folder)
    fd = _lock(folder)
    _claimed.add(folder.resolve())
    try:
        yield
    finally:
        _claimed.discard(folder.resolve())
        # removed while still held: a claimant that opened it meanwhile finds it unlinked (``_lock``)
        (folder / LOCK_FILE).unlink(missing_ok=True)
        os.close(fd)
        remove_if_empty(made)


def _lock(folder: Path) -> int:
    """The locked, open LOCK_FILE of ``folder``, with this process's pid written in it; RunInUse if another holds
    it."""
    path = folder / LOCK_FILE
    while True:
        folder.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except FileNotFoundError:  # its folder taken away by a claimant letting go of it: make it again
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip()
            os.close(fd)
            pid = f" (pid {holder})" if holder.isdigit() else ""  # empty: it has locked it, not yet written to it
            raise RunInUse(f"{folder} is in use by another training{pid}: wait for it to end, or stop it") from None
        try:
            current = os.path.samestat(os.fstat(fd), os.stat(path))
        except FileNotFoundError:
            current = False
        if current:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
            return fd
        os.close(fd)  # locked once its holder had let go of it and unlinked it: lock the one there now


def remove_stale_temporaries(folder: str | Path) -> None:
    """The temporary files (``NAME.PID.tmp``, ``inference.files.write_atomic``'s: checkpoints, each as large as
    one, and the history, summary and curves) of processes that were killed while writing (SIGKILL, a lost
    machine: no cleanup ran); a live writer's are kept (another process's, one alive under that pid)."""
    written = {*RUN_FILES, CONFIG_FILE, ENSEMBLE_RUN_FILE}
    for tmp in Path(folder).glob("*.*.tmp"):
        name, pid, _ = tmp.name.rsplit(".", 2)
        if name not in written and not name.endswith(".pt"):  # not a file of the run's: someone else's
            continue
        # this process has not started writing where it calls this: a file under its own pid is a killed
        # predecessor's (a container restarted after preemption often gets the same small pid)
        if pid.isdigit() and (int(pid) == os.getpid() or not process_running(int(pid))):
            tmp.unlink(missing_ok=True)


def save_checkpoint(state: dict[str, Any], path: Path) -> None:
    try:
        write_atomic(path, lambda f: torch.save(state, f))
    except RuntimeError as exc:
        # torch's writer wraps the OSError of a full disk or a file-size limit in a RuntimeError of its own
        # ("unexpected pos ..."): the user needs the OSError, which names what ran out
        cause = exc.__cause__ or exc.__context__
        if isinstance(cause, OSError):
            raise OSError(cause.errno, cause.strerror or str(cause), str(path)) from exc
        raise


def save_model_checkpoint(meta: dict[str, Any], model: torch.nn.Module, path: str | Path) -> None:
    """A checkpoint of a network and its meta alone, with no training state (an ensemble, a recovered network):
    evaluate, compare and export read it as any other."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint({"meta": meta, "model": model.state_dict(), "torch_version": str(torch.__version__)}, path)


CHECKPOINT_SUFFIXES = (".pt", ".pth")


def check_checkpoint_out(
    out: Path, inputs: Sequence[Path] = (), inputs_are: str = "the inputs", replace: bool = False
) -> None:
    """A checkpoint made from others (an ensemble, a recovered network) goes to a new file: not a folder, not
    under a file, never over one of ``inputs``, nor over a run's own best.pt or last.pt (that run could then
    be neither evaluated as itself nor resumed); over another file only with ``replace`` (--force)."""
    if out.is_dir():
        raise CheckpointError(f"--out {out} is a folder: name the checkpoint file to write, e.g. {out / 'model.pt'}")
    above = file_in_the_way(out.parent)
    if above is not None:
        raise CheckpointError(f"--out {out}: {above} is a file, not a folder")
    if out.resolve() in {p.resolve() for p in inputs}:
        raise CheckpointError(f"--out {out} is one of {inputs_are}: write to another file")
    if out.name in (BEST_FILE, LAST_FILE) and (out.parent / LAST_FILE).is_file():
        raise CheckpointError(
            f"--out {out} would replace the {out.name} of the run in {out.parent}: write it elsewhere"
        )
    if out.suffix not in CHECKPOINT_SUFFIXES:  # a slip of the shell's completion: a manifest, a graph, a config
        raise CheckpointError(
            f"--out {out} is not a checkpoint's name: end it in .pt (a checkpoint replaces no other file)"
        )
    if (out.parent / MANIFEST_NAME).is_file():
        raise CheckpointError(
            f"--out {out} is in a models folder (beside its {MANIFEST_NAME}), which holds the served models only: "
            "write the checkpoint elsewhere"
        )
    if out.exists() and not replace:  # another model, a finished run's best.pt: whatever it is, it is not lost
        raise CheckpointError(f"--out {out} exists: write to a new file, or replace it with --force")


def recorded_top1(ckpt: dict[str, Any]) -> float | None:
    """The validation top-1 training recorded for the weights ``ckpt`` holds: its own epoch's, which for a last.pt
    is not the run's best (best.pt's). None where there is none: a run that held out nothing (val_size 0) ranked
    its epochs by training accuracy, and a checkpoint without its history names no epoch's."""
    if (ckpt.get("meta") or {}).get("val_size") == 0:
        return None
    best, epoch = ckpt.get("best") or {}, ckpt.get("epoch")
    if epoch is None or epoch == best.get("epoch"):
        return best.get("val_top1")
    return next((h.get("val_top1") for h in ckpt.get("history") or [] if h.get("epoch") == epoch), None)


def checkpoint_file(path: str | Path) -> Path:
    """A checkpoint file, or a run folder standing for its best.pt."""
    path = Path(path)
    return path / BEST_FILE if path.is_dir() else path


def missing_checkpoint(path: Path) -> str:
    """What to say of a checkpoint that is not there (an unfinished ensemble run's members named)."""
    run = path.parent
    if path.name == BEST_FILE and (run / ENSEMBLE_RUN_FILE).is_file():
        finished = sorted(str(member) for member in run.glob(f"*/{BEST_FILE}"))
        return (
            f"no checkpoint at {path}: {run} is an ensemble recipe's run whose members have not all finished "
            f"training (its {BEST_FILE} is written after the last); "
            + (f"the members' own checkpoints so far: {', '.join(finished)}" if finished else "no member has one yet")
        )
    return f"no checkpoint at {path}"


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    return _load(checkpoint_file(path), hashed=False)[0]


def load_training_state(path: str | Path) -> dict[str, Any]:
    """A run's checkpoint with the training state a resume continues from; CheckpointError where it holds a
    network alone (such a file copied over a run's last.pt)."""
    ckpt = load_checkpoint(path)
    missing = [key for key in TRAINING_STATE_KEYS if key not in ckpt]
    if missing:
        raise CheckpointError(
            f"{checkpoint_file(path)} holds a network without the training state a run continues from (no "
            f"{', '.join(missing)}): it is no run's {LAST_FILE}; evaluate or export it, or train a new run"
        )
    return ckpt


def load_checkpoint_and_sha256(path: str | Path) -> tuple[dict[str, Any], str]:
    """The checkpoint and the sha256 of the very bytes it was read from: a run still training renames a new
    best.pt over the file at any moment, and a digest taken from the path before or after could name that one."""
    ckpt, sha = _load(checkpoint_file(path), hashed=True)
    assert sha is not None
    return ckpt, sha


def _load(path: Path, hashed: bool) -> tuple[dict[str, Any], str | None]:
    if not path.is_file():
        raise FileNotFoundError(missing_checkpoint(path))
    sha = None
    source: Path | io.BytesIO = path
    try:
        if hashed:
            data = path.read_bytes()
            sha, source = hashlib.sha256(data).hexdigest(), io.BytesIO(data)
        with torch.serialization.safe_globals(_ALLOWED_GLOBALS), warnings.catch_warnings():
            # a plain pickle's protocol, warned of in two lines before the refusal below says what the file is
            warnings.filterwarnings("ignore", message="Detected pickle protocol", category=UserWarning)
            ckpt = torch.load(source, map_location="cpu", weights_only=True)
    except PermissionError as exc:  # the file may be fine: say what stopped us, not that it is no checkpoint
        raise CheckpointError(f"cannot read {path}: {exc.strerror}") from exc
    # A damaged file (a truncated copy, a text file) fails inside torch with whatever its reader hit: an OSError
    # from the zip reader, a KeyError or IndexError from the unpickler's stack, not only an UnpicklingError.
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, KeyError, IndexError, OSError) as exc:
        raise CheckpointError(
            f"{path} is not a training checkpoint this project can read ({_unreadable(path, source, exc)})"
        ) from exc
    # torch.save writes anything: a bare state_dict or tensor would otherwise fail later on a missing key.
    if not isinstance(ckpt, dict) or "meta" not in ckpt or "model" not in ckpt:
        raise CheckpointError(f"{path} is not a training checkpoint (no meta/model entries)")
    problem = _malformed(ckpt)
    if problem:
        raise CheckpointError(f"{path} is not a training checkpoint this project wrote ({problem})")
    return ckpt, sha


def _unreadable(path: Path, source: Path | io.BytesIO, exc: BaseException) -> str:
    """Why torch could not load ``path`` (read from ``source``: the bytes a hashed load read), in the user's terms.
    torch's own words are kept only where nothing better is known, and never its advice to allow the object
    weights_only refused: that would run its code."""
    if path.suffix.lower() == ".onnx":
        return "it is an exported ONNX model: evaluate it with --onnx, verify it with `python -m export verify NAME`"
    refused = _refused_globals(source, exc) if isinstance(exc, pickle.UnpicklingError) else []
    if refused:
        return (
            f"it holds a {refused[0]} object, which loading with weights_only refuses so that no code in a "
            "checkpoint runs; this project's checkpoints hold tensors and plain data only"
        )
    if not zipfile.is_zipfile(source):
        return "it is not the zip archive torch.save writes: another kind of file, or the start of one cut short"
    other = _other_zip(source)
    if other:
        return other
    return f"a truncated or damaged copy of one? torch said: {exception_summary(exc, after='WeightsUnpickler error:')}"


# The entries torch.save writes in its archive's one folder, besides the tensors' data/N
_TORCH_ENTRIES = {"data.pkl", "version", ".format_version", "byteorder", ".storage_alignment"}


def _other_zip(source: Path | io.BytesIO) -> str | None:
    """What a zip archive that is not torch.save's is (a report's predictions.npz), or None where it has the
    layout of a checkpoint (torch's own entries in a folder): torch's refusal of the others names its own source
    files."""
    if isinstance(source, io.BytesIO):
        source.seek(0)
    try:
        with zipfile.ZipFile(source) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError):
        return None
    # any of torch's own entries: a copy that lost its data.pkl is a damaged checkpoint, not another archive
    if any(name.rpartition("/")[2] in _TORCH_ENTRIES for name in names if "/" in name):
        return None
    if not names:
        return "it is not a PyTorch checkpoint: an empty zip archive"
    if all(name.endswith(".npy") for name in names):
        return "it is not a PyTorch checkpoint: a NumPy .npz archive, such as a report's predictions.npz"
    return f"it is not a PyTorch checkpoint: a zip archive of other files ({', '.join(names[:3])})"


# torch's refusal of an object, in its words: read only where its disassembly cannot read the file
_REFUSED_GLOBAL = re.compile(r"\bGLOBAL ([\w.]+)")


def _refused_globals(source: Path | io.BytesIO, exc: BaseException) -> list[str]:
    """The objects (module.name) in ``source``'s pickle that loading with weights_only refuses to construct, read by
    torch's own disassembly rather than from the wording of its refusal (``exc``), which is read only for what that
    disassembly does not take: the legacy format of torch.save(_use_new_zipfile_serialization=False), which
    torch.load still reads. Empty where neither names one."""
    try:
        zipped = zipfile.is_zipfile(source)
        if zipped:
            if isinstance(source, io.BytesIO):
                source.seek(0)  # the very bytes torch.load refused (the path may hold another file by now), whole
            with torch.serialization.safe_globals(_ALLOWED_GLOBALS):
                return sorted(torch.serialization.get_unsafe_globals_in_checkpoint(source))
    except Exception:  # noqa: BLE001 - a damaged file fails in torch's reader with whatever it hit: none known
        return []
    said = None if zipped else _REFUSED_GLOBAL.search(str(exc))
    return [said.group(1)] if said else []


def _malformed(ckpt: dict[str, Any]) -> str | None:
    """What keeps a loaded dict with meta and model entries from being a checkpoint, if anything."""
    if not isinstance(ckpt["meta"], dict):
        return "its meta is not a mapping"
    missing = [key for key in META_KEYS if key not in ckpt["meta"]]
    if missing:
        return f"its meta lacks {', '.join(repr(k) for k in missing)}"
    if not isinstance(ckpt["model"], dict):
        return "its weights are not a mapping of tensors"
    meta = ckpt["meta"]  # a hand-edited one would otherwise fail deep in the network's constructor
    wrong = [key for key, kind in META_KINDS.items() if not isinstance(meta[key], kind) or isinstance(meta[key], bool)]
    if wrong:
        return f"its meta's {', '.join(wrong)} {'is' if len(wrong) == 1 else 'are'} not of the kind a run writes"
    if len(meta["classes"]) != meta["num_classes"]:
        return f"its meta names {len(meta['classes'])} classes for num_classes {meta['num_classes']}"
    return None


def model_from_checkpoint(ckpt: dict[str, Any], use_ema: bool = True) -> ImageClassifier:
    """Rebuild the network a checkpoint describes; prefers the EMA weights when the run kept them. CheckpointError
    when its weights do not fit that network (another version of the model's code, a hand-edited meta)."""
    meta = ckpt["meta"]
    try:
        model = create_model(meta["arch"], meta["num_classes"], meta["mean"], meta["std"], **meta["model_args"])
    except (ValueError, TypeError) as exc:  # arguments this version refuses (airbench's bn_momentum 0) or lacks
        raise CheckpointError(
            f"the network its meta describes ({meta['arch']}) cannot be built by this "
            f"version of the code: {exception_summary(exc, limit=200)}"
        ) from None
    weights = ckpt["ema"] if use_ema and ckpt.get("ema") else ckpt["model"]
    try:
        model.load_state_dict(weights)
    except (RuntimeError, TypeError, AttributeError) as exc:  # torch lists every mismatch: the first is enough
        raise CheckpointError(
            f"the checkpoint's weights do not fit the network its meta describes ({meta['arch']}, "
            f"{meta['num_classes']} classes): {exception_summary(exc, after='ImageClassifier:', limit=160)}"
        ) from None
    return model.eval()

"""``python -m service doctor``: will the service work on this host, with this --device? One command, one report.

It looks at what the service will meet: Python, ONNX Runtime and its providers, the CUDA 13 / cuDNN 9
libraries, the GPUs and the driver; it places every model of the manifest as the service would (wholly on
CUDA, or on the CPU), checks each on its provider (top-1 agreement with the CPU provider on generated
images, or accuracy on a labelled folder) and times it at batch 1 and 256. The exit status says whether
everything ``--device`` asks for will work: 0 yes, 1 no (the report says why), 2 a usage error.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import platform
import sys
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Literal, Sequence

import numpy as np

if TYPE_CHECKING:
    from .settings import ServiceSettings

from inference.classes import ClassMatcher
from inference.devices import DEVICE_KINDS, DEVICES, Device, device_choice
from inference.errors import UsageError
from inference.interrupts import say_stopped, terminations_as_interrupts
from inference.manifest import Manifest, ManifestError, ModelEntry, file_problems, load_manifest
from inference.messages import counted
from inference.precisions import precision
from inference.preprocess import IMAGE_EXTENSIONS, decode_image, to_model_input
from inference.tree_files import is_hidden, is_tree_image, unpack_command

from .gpus import GpuReport, gpu_report

# The shared objects onnxruntime-gpu 1.31's CUDA provider loads, by soname: the driver's own library, then the
# CUDA 13 runtime, cuBLAS and cuDNN 9 (from the nvidia-* wheels once onnxruntime.preload_dlls() has run).
CUDA_LIBRARIES = ("libcuda.so.1", "libcudart.so.13", "libcublas.so.13", "libcublasLt.so.13", "libcudnn.so.9")
GENERATED_IMAGES = 256
# Least top-1 agreement between a model on CUDA and the same file on the CPU provider, on generated images.
# Loose enough for near-ties that float16 accumulation order flips; a wrong kernel or layout agrees far less.
MIN_AGREEMENT = 0.97
SPEED_BATCHES = (1, 256)
SPEED_SECONDS = 0.5  # per batch size: enough runs to average out one slow first call, short enough to wait for

Status = Literal["ok", "warn", "fail", "info"]


@dataclass
class Finding:
    status: Status
    topic: str
    text: str


@dataclass
class Report:
    device: Device
    findings: list[Finding] = field(default_factory=list)

    def add(self, status: Status, topic: str, text: str) -> None:
        self.findings.append(Finding(status, topic, text))

    @property
    def failures(self) -> list[Finding]:
        return [f for f in self.findings if f.status == "fail"]

    @property
    def passed(self) -> bool:
        return not self.failures

    def render(self) -> str:
        marks = {"ok": "ok  ", "warn": "WARN", "fail": "FAIL", "info": "    "}
        width = max((len(f.topic) for f in self.findings), default=0)
        lines = [f"{marks[f.status]} {f.topic:<{width}}  {f.text}" for f in self.findings]
        if self.passed:
            warned = sum(f.status == "warn" for f in self.findings)
            tail = f" ({counted(warned, 'warning')} above)" if warned else ""
            lines.append(f"\n--device {self.device}: will work on this host{tail}")
        else:
            first, more = self.failures[0], len(self.failures) - 1
            tail = f" (and {counted(more, 'more failure', 'more failures')} above)" if more else ""
            lines.append(f"\n--device {self.device}: will NOT work on this host: {first.topic}: {first.text}{tail}")
        return "\n".join(lines)


def add_doctor_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "doctor",
        help="check that this host can serve the models (GPU, CUDA, each model on its provider)",
        description=__doc__.split("\n\n", 1)[1].strip() if __doc__ else None,
    )
    p.add_argument(
        "--device",
        type=device_choice,
        metavar="{" + ",".join(DEVICES) + "}",
        default=None,
        help="what the service will be started with: auto (CUDA when a GPU is visible, models that cannot run "
        "there on the CPU with a warning), cpu, or cuda (every model wholly on CUDA) (default: CIFAR_DEVICE, "
        "else auto)",
    )
    p.add_argument(
        "--models-dir", default=None, help="manifest and ONNX files (default: CIFAR_MODELS_DIR, else models/)"
    )
    p.add_argument(
        "--folder",
        metavar="DIR",
        help="a labelled folder (one sub-folder per class, named as the model's classes; a .tar.gz of one: unpack "
        "it first): check accuracy on it instead of agreement on generated images",
    )
    p.add_argument(
        "--model",
        action="append",
        metavar="NAME",
        dest="models",
        help="check this listed model only (repeatable; default: every model in the manifest); the host and every "
        "file's sha256 are checked all the same",
    )
    p.add_argument("--max-images", type=int, default=2000, help="most images read from --folder (default: 2000)")
    p.add_argument("--no-speed", action="store_true", help="skip the images/s measurement")
    p.set_defaults(fn=main)
    return p


def main(args: argparse.Namespace) -> int:
    from .settings import SETTINGS, ServiceSettings, SettingsError, empty_flag_refusal

    # an empty value would check the default models folder, or generated images instead of the labelled folder
    refused = empty_flag_refusal({"--models-dir": args.models_dir, "--folder": args.folder})
    if refused:
        print(f"error: {refused}", file=sys.stderr)
        return 2
    # The service's own settings, as `serve` reads them: a value it would refuse is refused here too, and the
    # models folder and device checked are the ones it would use.
    # A flag overrides its variable before the variables are checked, as for `serve`: CIFAR_DEVICE=gpu is no
    # error under --device cpu.
    flags = {SETTINGS[name].env: getattr(args, name) for name in ("device", "models_dir")}
    try:
        settings = ServiceSettings.checked({**os.environ, **{k: v for k, v in flags.items() if v is not None}})
    except SettingsError as exc:
        flagged = flags.get(SETTINGS[exc.setting].env) is not None  # from the flag: name what was typed, as serve does
        print(f"error: {exc.named(SETTINGS[exc.setting].flag) if flagged else exc}", file=sys.stderr)
        return 2
    models_dir, device = settings.models_dir, settings.device
    refused = _folder_refusal(args.folder) if args.folder else None
    if refused:
        print(f"error: {refused}", file=sys.stderr)
        return 2
    if args.max_images < 1:
        print("error: --max-images must be at least 1", file=sys.stderr)
        return 2
    try:
        with terminations_as_interrupts():
            speed = not args.no_speed
            report = diagnose(
                device,
                models_dir,
                args.folder,
                args.max_images,
                speed=speed,
                settings=settings,
                say=_say,
                only=args.models,
            )
    except UsageError as exc:  # a manifest the service would refuse, a --model it does not list
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:  # Ctrl-C, or SIGTERM/SIGHUP as Terminated: the checks so far are not a report
        return say_stopped(exc, "interrupted")
    print(report.render(), flush=True)
    return 0 if report.passed else 1


def _folder_refusal(folder: str) -> str | None:
    """Why ``--folder`` cannot be read, and what to give instead; None for a folder. An archive, which training
    reads, is refused as the scorer refuses it: picking a few images of each class would decompress all of it,
    and where its class folders sit in it (under one top folder or not) is training's reader's rule."""
    path = Path(folder)
    if path.is_dir():
        return None
    if not path.exists():
        return f"--folder {folder} is not a folder: it does not exist"
    unpack = unpack_command(folder)
    if unpack:
        return (
            f"--folder {folder} is an archive, not a folder: unpack it (mkdir DIR && {unpack}) and give --folder "
            "the folder in DIR that holds one sub-folder per class"
        )
    return f"--folder {folder} is a file, not a folder: give the folder that holds one sub-folder per class"


def _say(text: str) -> None:
    # The report comes at the end, on stdout; a run takes minutes on a busy host, so what it is doing meanwhile
    # goes to stderr, a line a step, which leaves stdout the report alone.
    print(text, file=sys.stderr, flush=True)


def diagnose(
    device: Device,
    models_dir: Path,
    folder: str | None = None,
    max_images: int = 2000,
    speed: bool = True,
    gpus: GpuReport | None = None,
    settings: ServiceSettings | None = None,
    say: Callable[[str], None] = lambda text: None,
    only: Sequence[str] | None = None,
) -> Report:
    """``settings``: how the service would run the models (arena, run size); its defaults when None. ``say``
    is told each step as it starts. ``only``: the names of the models to check (None: all of them)."""
    # Read first: a manifest the service would refuse is a usage error, said alone and without the host's wait.
    manifest = load_manifest(models_dir, verify=False)
    checked = _selected(manifest, only)
    say("checking the host: ONNX Runtime, GPUs, CUDA libraries")
    import onnxruntime as ort

    from .settings import ServiceSettings

    settings = ServiceSettings() if settings is None else settings
    from inference.runtime import CUDA, choose_default, preload_cuda, wants_cuda

    # ONNX Runtime logs its failed CUDA attempts as errors on stderr; this report states them once, in words.
    ort.set_default_logger_severity(4)
    report = Report(device)
    report.add("info", "python", f"{platform.python_version()} ({sys.executable})")
    report.add("info", "onnxruntime", f"{ort.__version__}, providers: {', '.join(ort.get_available_providers())}")
    gpus = gpu_report() if gpus is None else gpus
    cuda_wanted = wants_cuda(device)
    _host(report, device, gpus, CUDA in ort.get_available_providers(), cuda_wanted, preload_cuda)

    # Each file checked on its own: a missing or altered one is its model's failed check in the report (exit 1),
    # not a usage error, and every other model is still checked.
    say(f"checking the sha256 of {counted(len(manifest.models), 'model file')} in {models_dir}")
    bad_files = file_problems(manifest, Path(models_dir))
    if bad_files:
        report.add(
            "info",
            "manifest",
            f"{models_dir}: {counted(len(manifest.models), 'model')}, {len(bad_files)} of them without the file it "
            "records (below)",
        )
        # The service refuses to start over any such file, so one of a model --model leaves out fails here too.
        checked_names = {entry.name for entry in checked}
        for name, problem in bad_files.items():
            if name not in checked_names:
                report.add("fail", f"model {name}", problem)
    else:
        models = counted(len(manifest.models), "model")
        report.add("ok", "manifest", f"{models_dir}: {models}, every file matches its sha256")
    for kind in DEVICE_KINDS:
        choice = manifest.default_for(kind)
        report.add("info", f"default on {kind}", f"{choice.name} ({choice.reason})")

    # Each model's images decoded at its own input size and with its own fit; models that share both (and
    # their classes) share one reading.
    readings: dict[tuple, tuple[np.ndarray, np.ndarray]] = {}
    # Its sub-folders sorted out once per set of classes, and those left out said once: models that differ only
    # in size or fit each read the folder, but name no other sub-folders.
    sorted_out: dict[tuple[str, ...], tuple[list[tuple[int, Path]], list[str]]] = {}
    placements = {}
    for number, entry in enumerate(checked, 1):
        if entry.name in bad_files:
            report.add("fail", f"model {entry.name}", bad_files[entry.name])
            continue
        position = f"({number}/{len(checked)})"
        labelled = None
        if folder:
            classes = tuple(entry.classes)
            key = (classes, entry.input.size, entry.input.fit)
            if key not in readings:
                first_of_its_classes = classes not in sorted_out
                if first_of_its_classes:
                    sorted_out[classes] = _class_folders(Path(folder), entry)
                matched, left_out = sorted_out[classes]
                say(f"reading {folder} for {entry.name} {position}")
                images, labels, unreadable = _read_folder(Path(folder), entry, max_images, matched)
                readings[key] = (images, labels)
                height, width = entry.input.size
                report.add(
                    "info",
                    "folder",
                    f"{folder}: {counted(len(readings[key][1]), 'labelled image')}, at {height}x{width}, "
                    f"{entry.input.fit} (model {entry.name})",
                )
                if unreadable:  # training refuses such a folder: the accuracy below leaves them out
                    first = "; ".join(f"{path}: {why}" for path, why in unreadable[:3])
                    report.add(
                        "warn",
                        "folder",
                        f"{counted(len(unreadable), 'image')} could not be read, left out of the accuracy "
                        f"({first}{'; ...' if len(unreadable) > 3 else ''})",
                    )
                if left_out and first_of_its_classes:
                    alike = sum(m.classes == entry.classes for m in manifest.models) - 1
                    also = f" or the {counted(alike, 'other model')} with its classes" if alike else ""
                    report.add(
                        "warn",
                        "folder",
                        f"{'sub-folder' if len(left_out) == 1 else 'sub-folders'} named after no class of "
                        f"{entry.name}{also}, not read: "
                        f"{', '.join(map(repr, left_out))} (its classes: {', '.join(entry.classes)})",
                    )
            labelled = readings[key]
        say(f"checking {entry.name} {position}")
        timing = partial(say, f"timing {entry.name} {position}")
        placement = _check_model(report, entry, models_dir, device, labelled, speed, settings, timing)
        if placement is not None:
            placements[entry.name] = placement
    wanted_default = manifest.default_for("cuda" if cuda_wanted else "cpu").name
    if len(checked) < len(manifest.models) and wanted_default not in placements:
        # where the default would run is known only once it has been placed
        report.add("info", "default here", f"not judged: {wanted_default} was not checked (--model)")
    elif placements:
        here = choose_default(manifest, cuda_wanted, placements)
        where = "CUDA" if placements.get(here.name) and placements[here.name].on_gpu else "the CPU"
        report.add("info", "default here", f"{here.name} on {where} ({here.reason})")
    return report


def _host(report: Report, device: Device, gpus: GpuReport, has_cuda_ep: bool, cuda_wanted: bool, preload) -> None:
    # Missing CUDA pieces: fatal for --device cuda; for auto a warning where a GPU is there to be used, else a fact.
    need: Status = "fail" if device == "cuda" else ("warn" if gpus.gpus and device == "auto" else "info")
    if gpus.gpus:
        for gpu in gpus.gpus:
            report.add("ok", f"GPU {gpu.index}", f"{gpu.name}, {gpu.memory_gib:.0f} GiB ({gpu.uuid})")
    else:
        report.add(need, "GPU", f"no GPU visible to this process ({gpus.problem or 'NVML lists none'})")
    report.add("info" if gpus.driver else need, "NVIDIA driver", gpus.driver or "not visible")
    if not has_cuda_ep:
        report.add(need, "CUDA provider", "this ONNX Runtime has none (install onnxruntime-gpu)")
        return
    if not (gpus.gpus or device == "cuda"):
        report.add("info", "CUDA libraries", "not checked: no GPU to use them")
        return
    failed = preload()
    if failed:
        report.add("warn", "preload_dlls", f"onnxruntime.preload_dlls() failed: {failed}")
    missing = []
    for name in CUDA_LIBRARIES:
        try:
            ctypes.CDLL(name)
        except OSError as exc:
            missing.append(f"{name} ({exc})")
    if missing:
        report.add(need, "CUDA libraries", "cannot load " + "; ".join(missing))
    else:
        report.add("ok", "CUDA libraries", f"loaded: {', '.join(CUDA_LIBRARIES)}")
    if cuda_wanted:
        report.add("info", "sessions", "CUDA, with CPU fallback of nodes disabled (session.disable_cpu_ep_fallback)")


def _selected(manifest: Manifest, names: Sequence[str] | None) -> list[ModelEntry]:
    """The listed models named in ``names``, in the manifest's order; an unknown name is the manifest's usage
    error (naming those listed) before any check starts."""
    if not names:
        return list(manifest.models)
    if not all(names):  # an unset shell variable: not the default model, as manifest.get would read it
        raise UsageError("--model '' names no model; leave --model out to check every model")
    wanted = {manifest.get(name).name for name in names}
    return [entry for entry in manifest.models if entry.name in wanted]


def _check_model(
    report: Report,
    entry: ModelEntry,
    models_dir: Path,
    device: Device,
    labelled: tuple[np.ndarray, np.ndarray] | None,
    speed: bool,
    settings: ServiceSettings,
    timing: Callable[[], None] = lambda: None,
):
    from inference.runtime import CudaPlacementError, ModelFileError

    from .loading import check_card, open_classifier

    path = models_dir / entry.file
    topic = f"model {entry.name}"
    try:
        model = open_classifier(path, settings, device)  # as the service runs it
        check_card(entry, model.card)
    except CudaPlacementError as exc:  # --device cuda: the service would refuse to start
        report.add("fail", topic, f"cannot run wholly on CUDA: {exc.reason}")
        return None
    except (ModelFileError, ManifestError) as exc:  # the service would refuse to start too
        report.add("fail", topic, str(exc))
        return None
    placement = model.placement
    cpu = model if not model.on_gpu else open_classifier(path, settings, "cpu")
    status: Status = "ok"
    where = placement.describe()
    if placement.fallback:
        status = "warn"
        where = f"{placement.provider}, not CUDA: {placement.fallback}"
    report.add(status, topic, f"{entry.precision}, every node on {where}")

    if labelled is not None:
        images, labels = labelled
        accuracy = _accuracy(model, images, labels)
        text = f"accuracy {100 * accuracy:.2f}% on {counted(len(labels), 'image')} (recorded on validation: "
        text += f"{100 * entry.metrics['val_top1']:.2f}%)"
        if model.on_gpu:
            on_cpu = _accuracy(cpu, images, labels)
            gap = 100 * abs(accuracy - on_cpu)
            allowed = precision(entry.precision).tolerance_points
            text += f", CPU provider {100 * on_cpu:.2f}%"
            report.add("ok" if gap <= allowed else "fail", topic, f"{text}, gap {gap:.2f} <= {allowed:g} points")
        else:
            report.add("ok", topic, text)
    else:
        images = generated_images(GENERATED_IMAGES, entry.input.size)
        probs = model.probabilities(images)
        if not np.isfinite(probs).all():
            report.add("fail", topic, "non-finite outputs on generated images")
        elif model.on_gpu:
            agreement = float((probs.argmax(1) == cpu.probabilities(images).argmax(1)).mean())
            ok = agreement >= MIN_AGREEMENT
            report.add(
                "ok" if ok else "fail",
                topic,
                f"top-1 agreement with the CPU provider {100 * agreement:.1f}% on {len(images)} generated images "
                f"(least {100 * MIN_AGREEMENT:g}%)",
            )
        else:
            report.add("ok", topic, f"runs on {len(images)} generated images, finite probabilities")
    if speed:
        timing()
        # the check above ran the model on a batch of GENERATED_IMAGES already: that batch size is warm
        warm = GENERATED_IMAGES if labelled is None or len(labelled[1]) >= GENERATED_IMAGES else None
        rates = ", ".join(
            f"batch {n}: {images_per_second(model, n, entry.input.size, warm=n == warm):,.0f}" for n in SPEED_BATCHES
        )
        report.add("info", topic, f"images/s on {placement.provider}: {rates}")
    return placement


def generated_images(count: int, size: tuple[int, int], seed: int = 0) -> np.ndarray:
    """Smooth random colour fields with some noise, float32 [count, 3, H, W] in [0, 1]: structured enough that a
    CIFAR model's top-1 class is not a coin toss between near-tied logits, as it is on white noise."""
    rng = np.random.default_rng(seed)
    height, width = size
    coarse = rng.random((count, 3, 4, 4), dtype=np.float32)
    smooth = np.repeat(np.repeat(coarse, -(-height // 4), axis=2), -(-width // 4), axis=3)[:, :, :height, :width]
    noisy = smooth + rng.normal(0, 0.05, smooth.shape).astype(np.float32)
    return np.clip(noisy, 0, 1).astype(np.float32)


def images_per_second(model, batch: int, size: tuple[int, int], warm: bool = False) -> float:
    """Images/s at ``batch``, timed over at least SPEED_SECONDS and one run. ``warm``: the model has run a batch
    of this size before (its first call's allocations and kernel choice are made), so no untimed call comes first:
    a multi-crop FP16 model's batch of 256 is slow on a few CPU cores, and an untimed one would double the wait."""
    x = generated_images(batch, size, seed=1)
    if not warm:
        model.logits(x)
    runs, start = 0, time.perf_counter()
    while runs < 1 or time.perf_counter() - start < SPEED_SECONDS:
        model.logits(x)
        runs += 1
    return runs * batch / (time.perf_counter() - start)


def _accuracy(model, images: np.ndarray, labels: np.ndarray, batch: int = 256) -> float:
    predicted = np.concatenate([model.logits(images[i : i + batch]).argmax(1) for i in range(0, len(images), batch)])
    return float((predicted == labels).mean())


def _class_folders(folder: Path, entry: ModelEntry) -> tuple[list[tuple[int, Path]], list[str]]:
    """The sub-folders of ``folder`` that name one of the model's classes, with its index (matched as the scorer
    and `training evaluate` match a folder: exactly, else in Unicode NFC and ignoring case, so that a copy from
    macOS or a ``Cat/`` for ``cat`` counts), and the names of those that name none; hidden ones are neither."""
    matcher = ClassMatcher(entry.classes)
    matched, left_out = [], []
    for d in sorted(folder.iterdir()):
        if d.is_dir() and not is_hidden(d.name):
            label = matcher.index(d.name)
            if label is None:
                left_out.append(d.name)
            else:
                matched.append((label, d))
    return matched, left_out


def _read_folder(
    folder: Path, entry: ModelEntry, max_images: int, matched: list[tuple[int, Path]] | None = None
) -> tuple[np.ndarray, np.ndarray, list[tuple[Path, str]]]:
    """Up to ``max_images`` images of ``folder/CLASS/...`` whose CLASS names one of the model's classes
    (``matched``, else ``_class_folders``), spread over the classes (sorted paths, taken in turn), as the model's
    input (its size, its fit) and class indices; hidden files and folders are no images, as for training's folder
    reader; and the files that could not be read, with why. ``ManifestError`` if none is readable."""
    found: dict[int, list[Path]] = {}
    for label, d in _class_folders(folder, entry)[0] if matched is None else matched:
        found.setdefault(label, []).extend(
            p
            for p in d.rglob("*")
            if is_tree_image(p.name) and not any(is_hidden(part) for part in p.relative_to(d).parts)
        )
    if not found:
        raise ManifestError(f"--folder {folder} has no sub-folder named after a class ({', '.join(entry.classes)})")
    per_class = {entry.classes[label]: (label, sorted(paths)) for label, paths in sorted(found.items())}
    chosen: list[tuple[Path, int]] = []
    depth = 0
    while len(chosen) < max_images and any(depth < len(paths) for _, paths in per_class.values()):
        for label, paths in per_class.values():
            if depth < len(paths) and len(chosen) < max_images:
                chosen.append((paths[depth], label))
        depth += 1
    pixels = []
    labels = []
    unreadable: list[tuple[Path, str]] = []
    for path, label in chosen:
        try:
            pixels.append(decode_image(path.read_bytes(), entry.input.size, fit=entry.input.fit))
            labels.append(label)
        except (OSError, ValueError) as exc:  # not the host's problem: left out, and said
            unreadable.append((path.relative_to(folder), str(exc) or type(exc).__name__))
    if not pixels:
        raise ManifestError(
            f"--folder {folder}: no readable image in the sub-folders named after a class "
            f"({', '.join(sorted(per_class))}; read: {', '.join(sorted(IMAGE_EXTENSIONS))})"
        )
    return to_model_input(np.stack(pixels)), np.asarray(labels), unreadable

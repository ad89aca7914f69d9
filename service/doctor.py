"""``python -m service doctor``: will the service work on this host, with this --device? One command, one report.

It looks at what the service will meet: Python, ONNX Runtime and its providers, the CUDA 13 / cuDNN 9
libraries, the GPUs and the driver; it places every model of the manifest as the service would (wholly on
CUDA, or on the CPU), checks each on its provider (top-1 agreement with the CPU provider on generated
images, or accuracy on a labelled folder) and times it at batch 1 and 256. The exit status says whether
everything ``--device`` asks for will work: 0 yes, 1 no (the report says why), 2 a usage error.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Mapping, Sequence

import numpy as np

if TYPE_CHECKING:
    from .settings import ServiceSettings

from inference.classes import ClassMatcher
from inference.devices import DEVICE_KINDS, DEVICES, Device, device_choice
from inference.errors import UsageError
from inference.interrupts import say_stopped, terminations_as_interrupts
from inference.manifest import Manifest, ManifestError, ModelEntry, file_problems, load_manifest
from inference.messages import counted

from .doctor_folder import class_folders, folder_refusal, nested_warning, no_class_folder, read_folder
from .doctor_host import check_host
from .doctor_model import check_model
from .doctor_report import Report
from .gpus import GpuReport, gpu_report
from .serve_cli import add_setting_flag

# The key flags serve takes, taken as serve takes them: the key file serve will be given is checked here, and a key
# variable left empty is no warning once a flag gives the keys.
KEY_SETTINGS = ("api_keys", "api_keys_file")


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
    for name in KEY_SETTINGS:
        add_setting_flag(p, name)
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
    keys = {SETTINGS[name].flag: getattr(args, name) for name in KEY_SETTINGS}  # no key at all, as for serve
    refused = empty_flag_refusal({"--models-dir": args.models_dir, **keys, "--folder": args.folder})
    if refused:
        print(f"error: {refused}", file=sys.stderr)
        return 2
    # The service's own settings, as `serve` reads them: a value it would refuse is refused here too, and the
    # models folder and device checked are the ones it would use.
    # A flag overrides its variable before the variables are checked, as for `serve`: CIFAR_DEVICE=gpu is no
    # error under --device cpu.
    flags = {SETTINGS[name].env: getattr(args, name) for name in ("device", "models_dir", *KEY_SETTINGS)}
    try:
        settings = ServiceSettings.checked({**os.environ, **{k: v for k, v in flags.items() if v is not None}})
    except SettingsError as exc:
        flagged = flags.get(SETTINGS[exc.setting].env) is not None  # from the flag: name what was typed, as serve does
        print(f"error: {exc.named(SETTINGS[exc.setting].flag) if flagged else exc}", file=sys.stderr)
        return 2
    models_dir, device = settings.models_dir, settings.device
    refused = folder_refusal(args.folder) if args.folder else None
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
                environ=os.environ,
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
    environ: Mapping[str, str] | None = None,
    say: Callable[[str], None] = lambda text: None,
    only: Sequence[str] | None = None,
) -> Report:
    """``settings``: how the service would run the models (arena, run size), their contradictions warned of as
    `serve` warns of them; its defaults when None. ``environ``: the variables they were read from, a key variable
    set but empty in them warned of as `serve` warns of it (none looked at when None). ``say`` is told each step
    as it starts. ``only``: the names of the models to check (None: all of them)."""
    # Read first: a manifest the service would refuse is a usage error, said alone and without the host's wait.
    manifest = load_manifest(models_dir, verify=False)
    checked = _selected(manifest, only)
    sorted_out = _sorted_out(Path(folder), checked) if folder else {}
    say("checking the host: ONNX Runtime, GPUs, CUDA libraries")
    import onnxruntime as ort

    from .settings import ServiceSettings, cpu_count, empty_key_variables

    settings = ServiceSettings() if settings is None else settings
    from inference.runtime import CUDA, choose_default, preload_cuda, wants_cuda

    # ONNX Runtime logs its failed CUDA attempts as errors on stderr; this report states them once, in words.
    ort.set_default_logger_severity(4)
    report = Report(device)
    report.add("info", "python", f"{platform.python_version()} ({sys.executable})")
    report.add("info", "onnxruntime", f"{ort.__version__}, providers: {', '.join(ort.get_available_providers())}")
    gpus = gpu_report() if gpus is None else gpus
    cuda_wanted = wants_cuda(device)
    check_host(report, device, gpus, CUDA in ort.get_available_providers(), cuda_wanted, preload_cuda)
    # The settings `serve` warns of at its start (an empty key variable, each that works against another), in its
    # words: it runs all the same.
    for found in empty_key_variables(environ or {}, settings) + settings.contradictions(cuda_wanted, cpu_count()):
        report.add("warn", "settings", found)

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
    left_out_said: set[tuple[str, ...]] = set()
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
                matched, left_out = sorted_out[classes]
                say(f"reading {folder} for {entry.name} {position}")
                images, labels, unreadable = read_folder(Path(folder), entry, max_images, matched)
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
                if classes not in left_out_said:  # said once per set of classes
                    left_out_said.add(classes)
                    nested = nested_warning(Path(folder), matched)
                    if nested:
                        report.add("warn", "folder", nested)
                    if left_out:
                        matcher = ClassMatcher(entry.classes)
                        alike = sum(m.classes == entry.classes for m in manifest.models) - 1
                        also = f" or the {counted(alike, 'other model')} with its classes" if alike else ""
                        report.add(
                            "warn",
                            "folder",
                            f"{'sub-folder' if len(left_out) == 1 else 'sub-folders'} named after no class of "
                            f"{entry.name}{also}, not read: "
                            f"{', '.join(repr(name) + matcher.meant(name) for name in left_out)} "
                            f"(its classes: {', '.join(entry.classes)})",
                        )
            labelled = readings[key]
        say(f"checking {entry.name} {position}")
        timing = partial(say, f"timing {entry.name} {position}")
        placement = check_model(report, entry, models_dir, device, labelled, speed, settings, timing)
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


def _sorted_out(
    folder: Path, checked: Sequence[ModelEntry]
) -> dict[tuple[str, ...], tuple[list[tuple[int, Path]], list[str]]]:
    """The sub-folders of ``folder`` matched to classes, once per set of classes of the ``checked`` models (models
    that differ only in size or fit each read the folder, but name no other sub-folders). A folder named after
    no class of one of them is a usage error, refused before the host and the files are checked: the sha256 of
    large model files alone takes minutes."""
    found: dict[tuple[str, ...], tuple[list[tuple[int, Path]], list[str]]] = {}
    for entry in checked:
        classes = tuple(entry.classes)
        if classes not in found:
            found[classes] = class_folders(folder, entry)
            if not found[classes][0]:
                raise ManifestError(no_class_folder(folder, entry))
    return found


def _selected(manifest: Manifest, names: Sequence[str] | None) -> list[ModelEntry]:
    """The listed models named in ``names``, in the manifest's order; an unknown name is the manifest's usage
    error (naming those listed) before any check starts."""
    if not names:
        return list(manifest.models)
    if not all(names):  # an unset shell variable: not the default model, as manifest.get would read it
        raise UsageError("--model '' names no model; leave --model out to check every model")
    wanted = {manifest.get(name).name for name in names}
    return [entry for entry in manifest.models if entry.name in wanted]

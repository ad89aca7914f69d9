"""The scoring engines, one table: what each is, which of the engine-only flags it takes, how it is opened.

``run`` opens the chosen engine and drives it through the ``Backend`` protocol (pipeline.py); the walk,
the output, resume and the summary are the same for all of them.
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, NamedTuple

from inference.devices import Device
from inference.image_limits import DEFAULT_MAX_PIXELS
from inference.manifest import Manifest, ManifestError, ModelEntry, load_manifest, verify_file
from inference.runtime import choose_default, wants_cuda

from .errors import UserError
from .local import LocalBackend
from .pipeline import Backend
from .remote import DEFAULT_URL_BATCH, DEFAULT_URL_TIMEOUT, RemoteBackend
from .remote_options import API_KEY_VARIABLE


class EngineFlag(NamedTuple):
    flag: str
    # Filled in once the engine is chosen: argparse's own default would be taken for a value the user gave,
    # and the flag refused by the engines that do not take it. None: the engine chooses.
    default: object = None


# Flags that only some engines take (argparse dest -> flag and default): left unset, they do not count.
ENGINE_ONLY_FLAGS = {
    "url": EngineFlag("--url"),
    "api_key": EngineFlag("--api-key"),
    "timeout": EngineFlag("--timeout", DEFAULT_URL_TIMEOUT),
    "models_dir": EngineFlag("--models-dir", "models"),
    "device": EngineFlag("--device", "auto"),
    "max_pixels": EngineFlag("--max-pixels", DEFAULT_MAX_PIXELS),
    "workers": EngineFlag("--workers"),
    "streams": EngineFlag("--streams"),
    "threads": EngineFlag("--threads"),
    "address": EngineFlag("--address"),
    "actors": EngineFlag("--actors"),
    "gpus_per_actor": EngineFlag("--gpus-per-actor"),
}


@dataclass(frozen=True)
class Engine:
    name: str
    help: str
    flags: frozenset[str]  # the ENGINE_ONLY_FLAGS it takes
    open: Callable[[argparse.Namespace], Backend]


# ONNX Runtime's own default: warnings and above
ORT_DEFAULT_SEVERITY = 2


def _entry(manifest: Manifest, name: str | None, models_dir: str | Path) -> ModelEntry:
    """``name``'s entry, its file checked against the manifest: only the model that scores, so a folder holding
    just that model's file (of a manifest listing more) scores with it, and another model's missing file is
    not blamed."""
    try:
        entry = manifest.get(name)
        verify_file(entry, Path(models_dir), manifest)
    except KeyError as exc:
        raise UserError(exc.args[0]) from None
    except ManifestError as exc:
        raise UserError(str(exc)) from None
    return entry


def chosen_model(args: argparse.Namespace, on_gpu: bool) -> tuple[Manifest, ModelEntry]:
    """The manifest under ``--models-dir`` and ``--model``'s entry, or the default for the device it will run on."""
    try:
        manifest = load_manifest(args.models_dir, verify=False)
    except ManifestError as exc:
        raise UserError(str(exc)) from None
    return manifest, _entry(manifest, args.model or choose_default(manifest, on_gpu, {}).name, args.models_dir)


def _open_local(args: argparse.Namespace) -> Backend:
    cuda_wanted = wants_cuda(args.device)
    if not cuda_wanted:
        return _open_placed(args, cuda_wanted)
    import onnxruntime as ort

    # ONNX Runtime logs its failed CUDA attempts in colour; the refusal or the fallback warning says why in one
    # line, as `serve` and the doctor do. Its warnings while scoring are kept: its default level is given back.
    ort.set_default_logger_severity(4)
    try:
        return _open_placed(args, cuda_wanted)
    finally:
        ort.set_default_logger_severity(ORT_DEFAULT_SEVERITY)


def _open_placed(args: argparse.Namespace, cuda_wanted: bool) -> Backend:
    manifest, entry = chosen_model(args, cuda_wanted)
    backend = _local(args, entry.file, args.device)
    placement = backend.clf.placement
    if args.model is None and placement.fallback:
        # the GPU host's default cannot run on CUDA here: the CPU hosts' default, on the CPU (one rule with the service)
        choice = choose_default(manifest, cuda_wanted, {entry.name: placement})
        if choice.name != entry.name:
            print(f"warning: scoring with {choice.name}: {choice.reason}", file=sys.stderr)
            backend.close()
            return _local(args, _entry(manifest, choice.name, args.models_dir).file, "cpu")
    if placement.fallback:
        print(f"warning: {entry.name} runs on the CPU: {placement.fallback}", file=sys.stderr)
    return backend


def _local(args: argparse.Namespace, file: str, device: Device) -> LocalBackend:
    return LocalBackend(
        os.path.join(args.models_dir, file),
        device,
        args.threads,
        args.workers,
        args.batch_size,
        args.streams,
        args.fit,
        args.max_pixels,
    )


def _open_remote(args: argparse.Namespace) -> Backend:
    return RemoteBackend(
        args.url,
        args.model,
        args.workers,
        args.timeout,
        args.batch_size or DEFAULT_URL_BATCH,
        args.fit,
        args.api_key or os.environ.get(API_KEY_VARIABLE) or None,
    )


def _open_ray(args: argparse.Namespace) -> Backend:
    from .ray_engine import open_ray  # Ray is imported only when this engine is used

    _, entry = chosen_model(args, on_gpu=bool(args.gpus_per_actor))
    return open_ray(args, os.path.join(args.models_dir, entry.file))


ENGINES = {
    engine.name: engine
    for engine in (
        Engine(
            "local",
            "ONNX Runtime in this process, decoding in worker processes (the default)",
            frozenset({"models_dir", "device", "max_pixels", "workers", "streams", "threads"}),
            _open_local,
        ),
        Engine(
            "remote",
            "a running service's POST /classify (--url; the default when --url is given)",
            frozenset({"url", "api_key", "timeout", "workers"}),
            _open_remote,
        ),
        Engine(
            "ray",
            "Ray Data: reading and decoding tasks and a pool of model actors, on a local Ray instance or a "
            "cluster (--address; needs pip install -e '.[ray]')",
            frozenset({"models_dir", "device", "max_pixels", "address", "actors", "gpus_per_actor", "threads"}),
            _open_ray,
        ),
    )
}


def choose_engine(args: argparse.Namespace) -> Engine:
    """The engine ``--engine`` names (remote when only ``--url`` is given); UserError for a flag it does not take.
    The defaults of the flags it takes and was not given are filled in ``args``."""
    engine = ENGINES[args.engine or ("remote" if args.url else "local")]
    if engine.name == "remote" and not args.url:  # first: without --url, the other flags tell nothing
        raise UserError("--engine remote needs --url URL (a running service)")
    for dest, option in ENGINE_ONLY_FLAGS.items():
        if getattr(args, dest, None) is not None and dest not in engine.flags:
            takers = [name for name, other in ENGINES.items() if dest in other.flags]
            raise UserError(f"{option.flag} is not for --engine {engine.name} (it is for --engine {', '.join(takers)})")
    for dest in engine.flags:
        if getattr(args, dest, None) is None:
            setattr(args, dest, ENGINE_ONLY_FLAGS[dest].default)
    return engine

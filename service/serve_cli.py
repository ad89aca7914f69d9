"""``python -m service serve``: check the models, then run ``bentoml serve`` on ``service.service:Classifier``.

Flags become the CIFAR_* environment variables of settings.py, which BentoML's worker processes read;
``bentoml serve`` with those variables set (or none: the defaults) is the same service.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
from pathlib import Path
from typing import Any

from inference.devices import DEVICES, device_choice
from inference.interrupts import say_stopped, terminations_as_interrupts

from .bentoml_serve import exec_holding_stops
from .settings import (
    SETTINGS,
    ServiceSettings,
    SettingsError,
    accepted_range,
    cpu_count,
    empty_flag_refusal,
    start_notes,
)

SERVICE_IMPORT = "service.service:Classifier"
ROOT = Path(__file__).resolve().parent.parent


def add_serve_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    env_lines = "\n".join(f"  {s.flag:18} {s.env}" for s in SETTINGS.values())
    parser = sub.add_parser(
        "serve",
        help="serve the exported models over HTTP (BentoML)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=(
            "Serve top-k predictions of the models in a models folder (manifest.json) over HTTP.\n\n"
            "  POST /classify  multipart/form-data: images (files, one per image), and optionally k, model, fit,\n"
            "                  min_confidence; or the same as JSON with each image base64-encoded\n"
            "  GET  /models    the models, their classes, precision and accuracy\n"
            "  /v2/...         the Open Inference Protocol (KServe v2, Triton's HTTP API)\n"
            "  GET  /          a page to try the models in a browser\n"
            "  GET  /livez /readyz /metrics, the OpenAPI document at /docs.json, its UI at /docs\n\n"
            "Images of any mode up to --max-pixels pixels are accepted: EXIF rotation is applied, they are\n"
            "converted to RGB and fitted (the model's fit, or the request's) to its input size (32x32 for CIFAR).\n\n"
            "Every setting can also come from an environment variable (a flag wins over its variable; an\n"
            "empty variable means the default), which is how `bentoml serve` and a container are configured.\n"
            "A value out of its range stops the start, naming the flag or variable (exit 2).\n" + env_lines
        ),
    )
    parser.add_argument(
        "--port",
        type=tcp_port,
        # A string default goes through tcp_port only when serve runs: a bad $BENTOML_PORT is named there, and
        # does not stop the other commands from starting.
        default=os.environ.get("BENTOML_PORT", "3000"),
        help="TCP port (default: $BENTOML_PORT or 3000)",
    )
    parser.add_argument(
        "--host",
        default=os.environ.get("BENTOML_HOST") or "0.0.0.0",  # set but empty, as an unset CIFAR_* variable
        help="address to bind (default: $BENTOML_HOST or 0.0.0.0)",
    )
    for name in SETTINGS:
        add_setting_flag(parser, name)
    parser.add_argument(
        "--development",
        action="store_true",
        # BentoML 1.4 keeps its process manager and every worker in development mode (seen: --development --workers
        # 2 ran a supervisor and two workers), so the help must not promise one process.
        help="pass --development to `bentoml serve` (BentoML 1.4 still runs its process manager and --workers "
        "worker processes: not a single process)",
    )
    parser.set_defaults(fn=main)
    return parser


# A default the help would otherwise show as 0, '' or None, in words.
_SHOWN_DEFAULTS = {
    "models_dir": "models/ next to the service package",
    "streams": "one per core available, 2 with a GPU",
    "threads": "cores available / streams",
    "decode_threads": "cores available",
    "api_keys": "none: no key asked for",
    "api_keys_file": "none",
    "cors_origins": "none",
    "workers": "one per visible GPU, 1 on a CPU host",
    "max_run_images": "64 on the CPU, whole batches on a GPU",
}
_METAVARS = {"models_dir": "DIR", "api_keys_file": "FILE", "api_keys": "KEYS", "cors_origins": "ORIGINS"}


def add_setting_flag(parser: argparse.ArgumentParser, name: str) -> None:
    """The flag of setting ``name`` as serve takes it (default None: its variable, else the setting's default), so
    that another command given it (the doctor) reads it as serve would."""
    setting = SETTINGS[name]
    shown = _SHOWN_DEFAULTS.get(name, getattr(ServiceSettings(), name))
    kwargs: dict[str, Any] = {"choices": setting.choices} if setting.choices else {"metavar": _METAVARS.get(name, "N")}
    if name == "device":  # a GPU by its number is told how to pick it, as score and doctor tell it
        kwargs = {"type": device_choice, "metavar": "{" + ",".join(DEVICES) + "}"}
    accepts = accepted_range(setting)
    parser.add_argument(
        setting.flag,
        dest=name,
        default=None,
        help=f"{setting.help} (env {setting.env}; default: {shown}{f'; {accepts}' if accepts else ''})",
        **kwargs,
    )


def tcp_port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        port = -1
    # 0 would have the system pick a port, which the banner and the log could not name.
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a TCP port (1 to 65535; $BENTOML_PORT sets the default)")
    return port


def bind_error(host: str, port: int) -> str | None:
    """Why ``host:port`` cannot be listened on, or None. BentoML's supervisor finds out only once started, in a
    traceback with exit status 1 (a port taken, a host that is no address here)."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        with socket.socket(family, kind, proto) as sock:
            # as the supervisor binds: a port still in TIME_WAIT after a restart is free
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(address)
    except OSError as exc:
        return listen_refusal(host, port, exc)
    return None


def listen_refusal(host: str, port: int | str, exc: OSError) -> str:
    """Why ``host:port`` could not be listened on, as serve's check and the server's own bind say it."""
    return f"cannot listen on {host}:{port}: {exc.strerror or exc}"


def settings_env(args: argparse.Namespace, environ: dict[str, str] | None = None) -> dict[str, str]:
    """The environment the server runs with: the caller's, overridden by the flags given."""
    env = dict(os.environ if environ is None else environ)
    for name, setting in SETTINGS.items():
        value = getattr(args, name, None)
        if value is not None:
            is_path = name in ("models_dir", "api_keys_file")
            env[setting.env] = str(Path(value).resolve()) if is_path else str(value)
    return env


def address(host: str, port: int) -> str:
    """Where to open the service: a wildcard address is where the server listens, not one a browser opens (some
    refuse http://0.0.0.0)."""
    if host in ("0.0.0.0", "::", ""):
        return f"http://localhost:{port} (listening on {host or '0.0.0.0'})"
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def main(args: argparse.Namespace) -> int:
    # Until the exec, SIGTERM and SIGHUP stop the checks as Ctrl-C does; the server's process (bentoml_serve.py)
    # takes them over again.
    try:
        with terminations_as_interrupts():
            return _check_then_serve(args)
    except KeyboardInterrupt as exc:  # in the checks or at the hand-over: nothing started yet
        return say_stopped(exc, "interrupted")


def _check_then_serve(args: argparse.Namespace) -> int:
    """Refuse what would stop the server (one line, status 2), or become it (an exec: does not return)."""
    from inference.manifest import ManifestError, load_manifest
    from inference.runtime import CudaPlacementError, device_kind

    from .loading import CHECKED_ENV, check_model_files, manifest_digest

    # `--api-keys "$UNSET"` would serve with no key at all, `--models-dir ''` from the current folder
    flags = {"--host": args.host, **{s.flag: getattr(args, name, None) for name, s in SETTINGS.items()}}
    refused = empty_flag_refusal(flags)
    if refused:
        print(f"error: {refused}", file=sys.stderr)
        return 2
    env = settings_env(args)
    try:
        settings = ServiceSettings.checked(env)  # an unreadable or empty key file stops here, not in every worker
    except SettingsError as exc:
        flagged = getattr(args, exc.setting, None) is not None  # the value came from the flag: name what was typed
        print(f"error: {exc.named(SETTINGS[exc.setting].flag) if flagged else exc}", file=sys.stderr)
        return 2
    try:
        manifest = load_manifest(settings.models_dir, verify=True)
        check_model_files(manifest, Path(settings.models_dir))  # before "serving ...": a worker would fail for ever
        if settings.device == "cuda":
            _check_cuda(manifest, Path(settings.models_dir))
    except ManifestError as exc:
        # A folder the user did not type on this command line (a variable left set in the shell) is named as such.
        source = "" if args.models_dir is not None else _from_variable("models_dir", env)
        print(f"error: {exc}{source}", file=sys.stderr)
        return 2
    except CudaPlacementError as exc:
        print(f"error: {exc}\n`python -m service doctor --device cuda` checks this host in full", file=sys.stderr)
        return 2
    unbindable = bind_error(args.host, args.port)
    if unbindable:
        print(f"error: {unbindable}", file=sys.stderr)
        return 2
    env[SETTINGS["models_dir"].env] = str(Path(settings.models_dir).resolve())
    env[CHECKED_ENV] = manifest_digest(Path(settings.models_dir))
    kind = device_kind(settings.device)
    given = {name: getattr(args, name, None) for name in SETTINGS}
    for note in start_notes(os.environ, given, settings, on_gpu=kind == "cuda", cores=cpu_count()):
        print(note, file=sys.stderr)
    print(
        f"serving {', '.join(m.name for m in manifest.models)} (default on {kind}: "
        f"{manifest.default_for(kind).name}) from {settings.models_dir} on {address(args.host, args.port)}; "
        "ready once GET /readyz answers 200 (the log says 'ready:')",
        file=sys.stderr,
        flush=True,
    )
    command = [
        "-m",
        "service.bentoml_serve",
        str(args.port),
        "serve",
        SERVICE_IMPORT,
        "--port",
        str(args.port),
        "--host",
        args.host,
        "--working-dir",
        str(ROOT),
    ]
    if args.development:
        command.append("--development")
    # exec: the server is this process, so a supervisor's SIGTERM reaches BentoML's own shutdown.
    exec_holding_stops(command, env)
    return 0  # not reached


def _from_variable(name: str, environ: dict[str, str]) -> str:
    """`` (CIFAR_X=value)`` where the environment set the setting, else nothing."""
    setting = SETTINGS[name]
    value = environ.get(setting.env, "").strip()
    return f" ({setting.env}={value})" if value else ""


def _check_cuda(manifest, models_dir: Path) -> None:
    """``--device cuda``: refuse here, with the model's name and the reason, rather than in every worker's
    traceback, when a model cannot run wholly on CUDA (the workers check again as they load)."""
    import onnxruntime as ort

    from inference.runtime import SessionSettings, open_session

    # Its failed CUDA attempts are logged in colour before the one line below says why, as the doctor's are not.
    ort.set_default_logger_severity(4)
    for entry in manifest.models:
        open_session(models_dir / entry.file, "cuda", SessionSettings(threads=1))

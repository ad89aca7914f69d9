"""The service's settings: environment variables, so that BentoML's worker processes see what the CLI was given.

``python -m service serve --max-batch-size 32`` and ``CIFAR_MAX_BATCH_SIZE=32 bentoml serve`` are the
same thing: the CLI only translates its flags into these variables before BentoML starts its workers,
which import ``service.service`` afresh and read them here.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Mapping, get_args

from inference.devices import DEVICES, THREADS_MAXIMUM, Device, gpu_hint
from inference.image_limits import DEFAULT_MAX_PIXELS
from inference.messages import counted

Switch = Literal["on", "off"]
SWITCH: tuple[Switch, ...] = get_args(Switch)

# In the repository and inside a built Bento alike, models/ sits next to the service package.
DEFAULT_MODELS_DIR = Path(__file__).resolve().parent.parent / "models"


def cpu_count() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return max(1, os.cpu_count() or 1)


def default_streams(cores: int, on_gpu: bool) -> int:
    """Inference batches at once, for the service and the scorer. On CPU one single-threaded stream per core:
    concurrent runs on one session keep both cores busy where one two-threaded run leaves a core idle
    whenever the event loop or a decoder has the other (docs/measurements.md, "Service settings"). On a GPU
    two, so that one batch's host work overlaps the other's kernels without a batch per core holding GPU
    memory (not measured on a GPU)."""
    return 2 if on_gpu else cores


def threads_per_stream(cores: int, streams: int) -> int:
    """ONNX Runtime intra-op threads of each stream by default: the cores divided among the streams."""
    return max(1, cores // streams)


# Pieces of 64 hold a quarter of the memory of whole batches of 256 and run as fast on the CPU
# (docs/measurements.md, "Service memory"). A GPU is left its whole batches: not measured there.
CPU_RUN_IMAGES = 64


def empty_flag_refusal(flags: Mapping[str, object]) -> str | None:
    """The refusal of the first flag given an empty value (an unset shell variable: `--models-dir "$DIR"`), which
    would otherwise mean the flag's default; None when there is none."""
    empty = next((flag for flag, value in flags.items() if isinstance(value, str) and not value.strip()), None)
    return None if empty is None else f"{empty} is empty: give a value, or leave the flag out for its default"


class SettingsError(ValueError):
    """An environment variable (or the flag that set it) has a value the service cannot use. ``setting`` (a key
    of ``SETTINGS``) says which, ``problem`` what is wrong with it; the message names the setting by ``subject``,
    its variable unless given, so that a command line can name the flag instead (``named``)."""

    def __init__(self, setting: str, problem: str, subject: str | None = None) -> None:
        self.setting = setting
        self.problem = problem
        super().__init__(f"{subject or SETTINGS[setting].env} {problem}")

    def named(self, subject: str) -> str:
        return f"{subject} {self.problem}"


# What every integer setting must fit: ONNX Runtime takes its thread counts as 32-bit integers, and a larger
# limit ends start-up in a worker's traceback (then BentoML's restart loop), not in one line here.
INTEGER_MAXIMUM = 2**31 - 1


@dataclass(frozen=True)
class Setting:
    env: str
    flag: str
    help: str
    minimum: int | None = None  # an integer setting, at least this
    maximum: int = INTEGER_MAXIMUM  # and at most this
    choices: tuple[str, ...] | None = None
    text: bool = False  # plain text (neither an integer, a choice nor a path)


def accepted_range(setting: Setting) -> str | None:
    """The integers ``setting`` accepts, as the help says it; None for a setting that is no integer."""
    if setting.minimum is None:
        return None
    if setting.maximum != INTEGER_MAXIMUM:
        return f"{setting.minimum} to {setting.maximum}"
    return f"{setting.minimum} or more"


def _integer(name: str, text: str, minimum: int, maximum: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise SettingsError(name, f"must be an integer, got {text!r}") from None
    if value < minimum:
        raise SettingsError(name, f"must be at least {minimum}, got {value}")
    if value > maximum:
        raise SettingsError(name, f"must be at most {maximum}, got {value}")
    return value


SETTINGS: dict[str, Setting] = {
    "models_dir": Setting("CIFAR_MODELS_DIR", "--models-dir", "folder with manifest.json and the ONNX files it lists"),
    "device": Setting(
        "CIFAR_DEVICE",
        "--device",
        "where models run: auto (CUDA when a GPU is visible), cpu or cuda",
        choices=DEVICES,
    ),
    "streams": Setting(
        "CIFAR_STREAMS",
        "--streams",
        "inference batches run at once, each in its own thread (ONNX Runtime sessions are thread-safe)",
        minimum=1,
    ),
    "threads": Setting(
        "CIFAR_THREADS", "--threads", "ONNX Runtime intra-op threads of each batch", minimum=1, maximum=THREADS_MAXIMUM
    ),
    "max_batch_size": Setting(
        "CIFAR_MAX_BATCH_SIZE",
        "--max-batch-size",
        "adaptive batching: most images in one inference batch, across requests",
        minimum=2,
    ),
    "max_latency_ms": Setting(
        "CIFAR_MAX_LATENCY_MS",
        "--max-latency-ms",
        "adaptive batching: a request whose queueing + inference would exceed this is answered 503 (load shedding)",
        minimum=1,
    ),
    "max_images": Setting("CIFAR_MAX_IMAGES", "--max-images", "most images in one request", minimum=1),
    "max_body_bytes": Setting(
        "CIFAR_MAX_BODY_BYTES", "--max-body-bytes", "largest request body in bytes", minimum=1024
    ),
    "max_pixels": Setting(
        "CIFAR_MAX_PIXELS",
        "--max-pixels",
        "largest image (width x height) decoded; larger ones are refused before decoding",
        minimum=1,
    ),
    "decode_threads": Setting(
        "CIFAR_DECODE_THREADS", "--decode-threads", "threads decoding uploaded images", minimum=1
    ),
    "workers": Setting(
        "CIFAR_WORKERS",
        "--workers",
        "BentoML worker processes, each with its own copy of the models and its share of the cores; 0: one per "
        "visible GPU, each pinned to its own device, or 1 on a CPU host",
        minimum=0,
    ),
    "timeout_s": Setting("CIFAR_TIMEOUT_S", "--timeout", "seconds before a request is abandoned", minimum=1),
    "access_log": Setting("CIFAR_ACCESS_LOG", "--access-log", "BentoML's per-request access log line", choices=SWITCH),
    "max_run_images": Setting(
        "CIFAR_MAX_RUN_IMAGES",
        "--max-run-images",
        "most images in one ONNX Runtime run: a larger batch runs in pieces this size, which bounds the memory each "
        "model keeps from its largest run; 0: 64 for a model on the CPU, whole batches on a GPU",
        minimum=0,
    ),
    "memory_arena": Setting(
        "CIFAR_MEMORY_ARENA",
        "--memory-arena",
        "ONNX Runtime's CPU memory arena: on keeps each model's largest batch's buffers between batches (GiBs for "
        "the shipped models once warmed up), off gives them back after each batch",
        choices=SWITCH,
    ),
    "api_keys": Setting(
        "CIFAR_API_KEYS",
        "--api-keys",
        "comma-separated keys; when set, the inference routes require 'Authorization: Bearer KEY' (a flag shows "
        "in the process list: prefer the variable or --api-keys-file)",
        text=True,
    ),
    "api_keys_file": Setting(
        "CIFAR_API_KEYS_FILE", "--api-keys-file", "a file of API keys, one per line ('#' starts a comment)"
    ),
    "cors_origins": Setting(
        "CIFAR_CORS_ORIGINS",
        "--cors-origins",
        "comma-separated origins browsers may call the API from, each as a browser's Origin header says it: "
        "scheme://host[:port], lowercase, no path ('*': any); unset, no CORS headers",
        text=True,
    ),
}


def given_settings(environ: Mapping[str, str], flags: Mapping[str, str | None]) -> str:
    """The settings given, each as it was given (``--flag VALUE`` or ``VARIABLE=VALUE``), a flag that overrides its
    variable saying so; ``flags``: each setting's flag's value, None where the flag was not given. Keys are counted,
    never shown: the line goes to logs."""
    given = []
    for name, setting in SETTINGS.items():
        typed, from_env = flags.get(name), environ.get(setting.env, "").strip()
        if typed is not None:
            part = f"{setting.flag} {_shown(name, typed.strip())}"
            if from_env and from_env != typed.strip():
                part += f" (over {setting.env}={_shown(name, from_env)})"
        elif from_env:
            part = f"{setting.env}={_shown(name, from_env)}"
        else:
            continue
        given.append(part)
    if not given:
        return "settings: the defaults (serve --help lists them)"
    return f"settings: {', '.join(given)}; the others at their defaults"


def start_notes(
    environ: Mapping[str, str], flags: Mapping[str, str | None], settings: ServiceSettings, on_gpu: bool, cores: int
) -> list[str]:
    """What a start says before the server runs, a line each: the settings given (``given_settings``), then a
    ``warning:`` for a key variable set but empty while no key is asked for, and one for each of the settings'
    ``contradictions``. ``settings``: those the service runs with, flags and variables together."""
    notes = [given_settings(environ, flags)]
    notes += [f"warning: {found}" for found in empty_key_variables(environ, settings)]
    notes += [f"warning: {found}" for found in settings.contradictions(on_gpu, cores)]
    return notes


def empty_key_variables(environ: Mapping[str, str], settings: ServiceSettings) -> list[str]:
    """A key variable of ``environ`` set but empty while ``settings`` ask for no key, a line each; `serve` and
    the doctor both warn of them."""
    if settings.api_keys.strip() or settings.api_keys_file is not None:
        return []
    found = []
    # `CIFAR_API_KEYS=${KEYS}` in a Compose file with KEYS unset: meant to close the service, it runs open
    for name in ("api_keys", "api_keys_file"):
        variable = SETTINGS[name].env
        if variable in environ and not environ[variable].strip():
            found.append(
                f"{variable} is set but empty: the service runs without keys (unset it, or give "
                f"{'keys' if name == 'api_keys' else 'a file of keys'})"
            )
    return found


def _names(name: str) -> str:
    return f"{SETTINGS[name].flag}, {SETTINGS[name].env}"


def _shown(name: str, value: str) -> str:
    if name == "api_keys":
        keys = {key.strip() for key in value.split(",")} - {""}
        return f"<{counted(len(keys), 'key')}>"
    return value


# An Origin header as a browser sends it (RFC 6454's serialisation): a lowercase scheme, "://", a lowercase host (an
# IPv6 address in brackets) and a port, only where it is not the scheme's default; no path, not even "/". starlette
# compares the configured origins with that header as strings: a value of another shape never matches any request.
_ORIGIN = re.compile(r"[a-z][a-z0-9+.-]*://(\[[0-9a-f:.]+\]|[a-z0-9-]+(\.[a-z0-9-]+)*)(:[0-9]{1,5})?")
_DEFAULT_PORTS = {"http": 80, "https": 443}


def origin_problem(origin: str) -> str | None:
    """Why ``origin``, an entry of --cors-origins, can never equal a browser's Origin header; None when it can."""
    if origin in ("*", "null"):  # any origin; the one a sandboxed frame or a page opened from a file sends
        return None
    why = _shape_problem(origin) or _port_problem(origin)
    if why is None:
        return None
    return (
        f"holds {origin[:100]!r}, which no browser sends as its Origin: {why} "
        "(an origin: https://example.com, http://localhost:8080)"
    )


def _shape_problem(origin: str) -> str | None:
    scheme, found, rest = origin.partition("://")
    host_port = re.split(r"[/?#]", rest, maxsplit=1)[0]
    if "*" in origin:
        return "a wildcard matches nothing inside an origin (only '*' alone, any origin, does): name each origin"
    if not found or not scheme:
        return "it has no scheme and '://'"
    if host_port != rest:
        return f"an origin has no path, query or fragment, not even a trailing '/': {scheme}://{host_port}"
    if not origin.isascii():
        return "a browser sends a host name that is not ASCII as punycode (xn--...)"
    if origin != origin.lower():
        return f"a browser sends it in lowercase: {origin.lower()}"
    if "@" in rest:
        return "an origin has no user name"
    if _ORIGIN.fullmatch(origin) is None:
        return "it is not scheme://host[:port]"
    return None


def _port_problem(origin: str) -> str | None:
    scheme, _, host_port = origin.partition("://")
    given = re.search(r":([0-9]+)$", host_port)
    if given is None:
        return None
    port = int(given.group(1))
    if not 1 <= port <= 65535:
        return f"{port} is no TCP port"
    if port == _DEFAULT_PORTS.get(scheme):
        return f"a browser leaves the scheme's default port out: {origin[: given.start() - len(host_port)]}"
    return None


@dataclass(frozen=True)
class ServiceSettings:
    models_dir: Path = DEFAULT_MODELS_DIR
    device: Device = "auto"
    # Several single-threaded batches at once, not one multi-threaded batch at a time: that leaves a core
    # idle whenever the event loop hands results back or an intra-op thread waits at a barrier for one the
    # event loop displaced (docs/measurements.md, "Service settings").
    streams: int = 0  # 0: one per core this process may use
    threads: int = 0  # 0: the cores divided among the streams (one each, by default)
    # Large: each batch pays the hand-offs between event loop and inference thread once
    # (docs/measurements.md, "Service settings").
    max_batch_size: int = 256
    max_run_images: int = 0  # 0: CPU_RUN_IMAGES on the CPU, whole batches on a GPU
    # Only a shedding threshold: the dispatcher waits for a batch adaptively, far less than this.
    max_latency_ms: int = 10_000
    max_images: int = 64
    max_body_bytes: int = 32 * 1024 * 1024
    max_pixels: int = DEFAULT_MAX_PIXELS
    decode_threads: int = 0  # 0: one per core
    workers: int = 0  # 0: one per visible GPU (service/workers.py), 1 on a CPU host
    timeout_s: int = 60
    # Off by default: the per-request log line costs single-image throughput (docs/measurements.md,
    # "Service settings"); /metrics counts requests either way.
    access_log: Switch = "off"
    # On: with runs of at most CPU_RUN_IMAGES, the arena's memory buys throughput (docs/measurements.md, "Service
    # memory", has both).
    memory_arena: Switch = "on"
    # Off by default: no key needed, no cross-origin calls allowed.
    api_keys: str = ""
    api_keys_file: Path | None = None
    cors_origins: str = ""

    def __post_init__(self) -> None:
        # Built directly too (the doctor, tests), not only through ``from_env``: a choice holds what its type says.
        for name, setting in SETTINGS.items():
            value = getattr(self, name)
            if setting.choices is not None and value not in setting.choices:
                hint = gpu_hint(str(value)) if name == "device" else ""
                raise SettingsError(
                    name, f"must be one of {', '.join(setting.choices)}, got {value!r}{hint}", subject=name
                )
        # A typo in an origin (a trailing slash, a path, 'http//'), which starlette would silently never match.
        for origin in self.cors_origin_list:
            problem = origin_problem(origin)
            if problem is not None:
                raise SettingsError("cors_origins", problem)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> "ServiceSettings":
        environ = os.environ if environ is None else environ
        # Any: each value has its own field's type (its Setting says which), which no one type of the dict can say.
        values: dict[str, Any] = {}
        for name, setting in SETTINGS.items():
            text = environ.get(setting.env, "").strip()
            if not text:
                continue
            if setting.minimum is not None:
                values[name] = _integer(name, text, setting.minimum, setting.maximum)
            elif setting.choices is not None:
                if text not in setting.choices:
                    hint = gpu_hint(text) if name == "device" else ""
                    raise SettingsError(name, f"must be one of {', '.join(setting.choices)}, got {text!r}{hint}")
                values[name] = text
            elif setting.text:
                values[name] = text
            else:
                values[name] = Path(text)
        return cls(**values)

    @classmethod
    def checked(cls, environ: Mapping[str, str] | None = None) -> "ServiceSettings":
        """``from_env`` with the key file read too: what `serve` refuses before it starts any worker, and the
        doctor refuses alike."""
        settings = cls.from_env(environ)
        settings.api_key_set()
        return settings

    # ``cores``: the cores one worker sizes its threads for (service/workers.py); None: all this process may use.
    def inference_streams(self, on_gpu: bool = False, cores: int | None = None) -> int:
        return self.streams or default_streams(cores or cpu_count(), on_gpu)

    def intra_op_threads(self, on_gpu: bool = False, cores: int | None = None) -> int:
        return self.threads or threads_per_stream(cores or cpu_count(), self.inference_streams(on_gpu, cores))

    def run_images(self, on_gpu: bool) -> int | None:
        """Most images in one ONNX Runtime run of a model placed on a GPU or not; None: no limit."""
        return self.max_run_images or (None if on_gpu else CPU_RUN_IMAGES)

    def decoder_threads(self, cores: int | None = None) -> int:
        return self.decode_threads or cores or cpu_count()

    def api_key_set(self) -> frozenset[str]:
        """The keys from ``api_keys`` and ``api_keys_file`` together; empty: no key is asked for."""
        keys = {key.strip() for key in self.api_keys.split(",")} - {""}
        if self.api_keys.strip() and not keys:
            # Commas and spaces only: as an empty key file, a gate meant to close the service and holding no key.
            raise SettingsError("api_keys", f"{self.api_keys!r} holds no key")
        if self.api_keys_file is not None:
            try:
                lines = Path(self.api_keys_file).read_text().splitlines()
            except (OSError, UnicodeDecodeError) as exc:
                raise SettingsError("api_keys_file", f"{self.api_keys_file}: {exc}") from None
            file_keys = {line.split("#", 1)[0].strip() for line in lines} - {""}
            if not file_keys:
                # An empty file would silently open the service that the file was meant to close.
                raise SettingsError("api_keys_file", f"{self.api_keys_file} holds no key")
            keys |= file_keys
        return frozenset(keys)

    def contradictions(self, on_gpu: bool, cores: int | None = None) -> list[str]:
        """Settings that work against each other, each said with its flag and variable: the service runs as told
        all the same (a choice may be deliberate), so ``serve`` warns of them rather than refuses."""
        found = []
        cores = cores or cpu_count()
        if not on_gpu and self.workers > cores:
            found.append(
                f"{self.workers} workers ({_names('workers')}) on {cores} core(s) without a GPU: each worker holds "
                "its own copy of the models, so workers beyond one per core add memory, not speed"
            )
        if self.max_latency_ms > self.timeout_s * 1000:
            found.append(
                f"a batching latency of {self.max_latency_ms} ms ({_names('max_latency_ms')}) is longer than the "
                f"request timeout of {self.timeout_s} s ({_names('timeout_s')}): a request queued that long times "
                "out (504) before it would be shed (503, overloaded)"
            )
        return found

    @property
    def cors_origin_list(self) -> list[str]:
        return [origin.strip() for origin in self.cors_origins.split(",") if origin.strip()]

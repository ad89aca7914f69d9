"""Starting or joining Ray for the engine: the cluster's address (--address or RAY_ADDRESS), the checks that
answer a bad one in one line at once where ray.init would retry for minutes or fail in three lines, and the
process-wide settings of Ray and Ray Data that keep its output off the rows and the rows in the walk's order.

Apart from the engine because it is all about the connection, which the engine opens once and the datasets
never touch.
"""

from __future__ import annotations

import importlib
import logging
import os
import socket
import sys

from inference.runtime import default_threads

from .errors import UserError

# Ray's own commands read the cluster's address from this variable (`ray job submit` sets it for its entrypoint).
ADDRESS_VARIABLE = "RAY_ADDRESS"
# How long the cluster's address may take to accept a connection. ray.init itself retries an address where
# nothing answers for about ten minutes, printing a warning every half minute.
CONNECT_TIMEOUT_S = 5.0
AUTH_MODE_VARIABLE = "RAY_AUTH_MODE"


def resolve_address(address: str | None) -> tuple[str | None, str]:
    """The cluster to join (None: start a local instance) and, for the summary line, where its address came
    from: ``--address``, else the RAY_ADDRESS variable, as Ray's own commands take it."""
    if address is not None and address != "auto":
        return address, ""
    from_variable = os.environ.get(ADDRESS_VARIABLE) or None
    if from_variable is not None:
        return from_variable, f" ({ADDRESS_VARIABLE})"
    return address, ""


def check_not_http(address: str | None, source: str) -> None:
    """UserError for an HTTP address, the dashboard's and Jobs API's (``ray job submit --address``), which a
    driver cannot join: Ray's own refusal spans three lines and blames RAY_ADDRESS even for --address."""
    # Stripped: a pasted " http://..." is the same mistake, which Ray would refuse as a module named " http".
    if address is None or not address.strip().lower().startswith(("http://", "https://")):
        return
    given, mend = (f"{ADDRESS_VARIABLE}={address}", "set it to") if source else (f"--address {address}", "give")
    raise UserError(
        f"{given} is an HTTP address (a Ray dashboard's or its Jobs API's), which a driver cannot join: {mend} the "
        "cluster's HEAD:6379, or ray://HEAD:10001 for Ray Client" + (", or unset it" if source else "")
    )


def _endpoint(address: str) -> tuple[str, int] | None:
    """The host and port an address names (HOST:PORT, ray://HOST:PORT); None for one Ray resolves itself."""
    scheme, sep, rest = address.partition("://")
    if sep and scheme != "ray":
        return None
    host, sep, port = (rest if sep else address).rstrip("/").rpartition(":")
    if not sep or not host or not port.isdigit():
        return None
    return host.strip("[]"), int(port)


def check_reachable(address: str, timeout: float = CONNECT_TIMEOUT_S) -> None:
    """UserError, within ``timeout``, when nothing accepts a connection at the address; ray.init would retry
    for minutes."""
    endpoint = _endpoint(address)
    if endpoint is None:
        return
    host, port = endpoint
    try:
        socket.create_connection(endpoint, timeout=timeout).close()
    except socket.gaierror:
        raise UserError(f"cannot reach Ray at {address}: unknown host {host!r}") from None
    except (TimeoutError, socket.timeout):
        raise UserError(f"cannot reach Ray at {address}: no answer from {host} within {timeout:g} s") from None
    except OSError as exc:
        reason = (
            "nothing listens there (is the cluster's head running?)"
            if isinstance(exc, ConnectionRefusedError)
            else (exc.strerror or str(exc))
        )
        raise UserError(f"cannot reach Ray at {address}: {reason}") from None


def _connect(ray, address: str | None) -> bool:
    """Start or join Ray; False when this process was connected already (a program embedding the scorer)."""
    if ray.is_initialized():
        return False
    if address is not None:
        if address.startswith("ray://"):
            _check_client(ray, address)
        check_reachable(address)
    _errors_to_stderr(ray)
    common = dict(logging_level=logging.ERROR, log_to_driver=False)
    try:
        if address is None:
            # "local": a new instance even where a cluster runs on this machine (that takes --address auto).
            ray.init(address="local", num_cpus=default_threads(), include_dashboard=False, **common)
        else:
            import inference
            import service

            # The cluster's workers get this checkout's code, whatever version the nodes have installed.
            ray.init(address=address, runtime_env={"py_modules": [inference, service]}, **common)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        hint = ""
        # A ValueError is an address Ray cannot parse ("Invalid address format"), which no token would mend.
        if address not in (None, "auto") and AUTH_MODE_VARIABLE not in os.environ and not isinstance(exc, ValueError):
            # Ray sends a cluster's token only to a cluster it found itself (auto): its log lines above said
            # InvalidAuthToken, its exception does not.
            hint = f" (a cluster with token authentication also needs {AUTH_MODE_VARIABLE}=token)"
        raise UserError(
            f"cannot start or reach Ray at {address or 'a local instance'}: {_one_line(exc)}{hint}"
        ) from None
    except ray.exceptions.AuthenticationError as exc:  # RAY_AUTH_MODE=token without the cluster's token
        raise UserError(f"cannot start or reach Ray at {address or 'a local instance'}: {_one_line(exc)}") from None
    return True


def _one_line(exc: BaseException) -> str:
    """Ray's message, whose parse errors span lines ("Module: x does not exist.\nThis module was parsed from
    ..."), as one line: the scorer's refusals are one line each."""
    return " ".join(line.strip() for line in str(exc).splitlines() if line.strip())


def _check_client(ray, address: str) -> None:
    """UserError when Ray Client cannot run here: ray.init would fail inside Ray's own import of grpcio, which
    ray[data] alone does not install. Imported, not looked up: a grpcio that is there but does not import (built
    for another Python) fails Ray as a missing one does."""
    try:
        importlib.import_module("grpc")  # by name: mypy refuses an import of a package that may be absent
    except ImportError as exc:
        raise UserError(
            f"{address} is a Ray Client address, which needs Ray's client extra (import grpc: {exc}): "
            f"pip install -e '.[ray]' brings it, or pip install 'ray[client]=={ray.__version__}'"
        ) from None


def _errors_to_stderr(ray) -> None:
    """Ray's driver prints the errors its nodes publish (a task retried, a worker lost) to standard output,
    where the rows go without --out: they go to standard error instead. Ray's private API, pinned with the
    extra's version (tests/test_score_ray.py checks it is still there)."""
    worker = ray._private.worker
    if getattr(worker.print_to_stdstream, "to_stderr", False):
        return
    print_to_stdstream = worker.print_to_stdstream

    def to_stderr(data, ignore_prefix):
        print_to_stdstream({**data, "is_err": True}, ignore_prefix)

    to_stderr.to_stderr = True  # type: ignore[attr-defined]
    worker.print_to_stdstream = to_stderr


def _set_up_ray_data(ray) -> None:
    """Rows in the walk's order, as the local engine writes them (the first failed files of the summary, and
    the rows --resume scores again to compare, depend on it). Ray Data's own progress bars and per-dataset log
    lines would interleave with the scorer's bar."""
    context = ray.data.DataContext.get_current()
    context.execution_options.preserve_order = True
    context.enable_progress_bars = False
    for handler in logging.getLogger("ray.data").handlers:
        if getattr(handler, "stream", None) in (sys.stderr, sys.stdout):
            # A failed stage's ERROR lines too: the failure reaches this process as its exception, said in one line
            # (RayBackend._score); Ray's log files keep them.
            handler.setLevel(logging.CRITICAL)

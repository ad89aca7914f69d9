"""``python -m service.bentoml_serve PORT ARGS...``: ``python -m bentoml ARGS...`` for the server on PORT, with its
own metrics folder (``bentoml_compat.command_line.serve_with_own_metrics``). What ``python -m service serve`` runs.

BentoML's process manager (circus) picks two free local ports for its control sockets, lets them go, and binds them
again a moment later; another program can take one in between, and the start fails with ZMQ's "Address already in
use" about a port the user never chose. Nothing is served yet at that point, so the start is made again, in a fresh
process (the failed one keeps the HTTP socket and ZMQ threads), up to ``ATTEMPTS`` times. The user's own port,
taken in the seconds between serve's check of it and BentoML's bind, is said in one line, as that check says it.

Until BentoML's process manager takes the signals over (it then stops gracefully, with status 0), a stop ends the
start as it ends every other command: Ctrl-C, SIGTERM and SIGHUP say ``interrupted``, status 128 + the signal."""

from __future__ import annotations

import errno
import os
import signal as signal_module
import sys
from typing import Any

from inference.interrupts import give_back, say_stopped, stopped_while_importing, stops_recorded, take_over_terminations

from .process_end import STOPS

ATTEMPT_ENV = "CIFAR_SERVE_ATTEMPT"
ATTEMPTS = 3


def internal_port_taken(exc: BaseException) -> bool:
    """Whether ``exc`` is circus failing to bind one of its own ZMQ sockets (the user's port is checked before)."""
    try:
        import zmq
    except ImportError:
        return False
    return isinstance(exc, zmq.ZMQError) and exc.errno == errno.EADDRINUSE


def _open_descriptors() -> list[int]:
    for folder in ("/proc/self/fd", "/dev/fd"):
        try:
            return [int(name) for name in os.listdir(folder)]
        except OSError:
            continue
    return []


def start_again(argv: list[str], attempt: int) -> None:
    """Replace this process with a new start of the same server, attempt number ``attempt``."""
    # The failed start's sockets (the HTTP port among them) are inheritable, for circus's workers: an exec would
    # hand them to the new start, whose own bind of the same port would then fail. Not closed here, as ZMQ's
    # threads still use some of them; the exec closes them.
    for fd in _open_descriptors():
        if fd > 2:
            try:
                os.set_inheritable(fd, False)
            except OSError:
                pass
    exec_holding_stops(["-m", "service.bentoml_serve", *argv], {**os.environ, ATTEMPT_ENV: str(attempt)})


# The signals circus's handler answers with a quit (handle_int, handle_term, handle_quit).
QUIT_SIGNALS = (signal_module.SIGINT, signal_module.SIGTERM, signal_module.SIGQUIT)


def stop_signals() -> list[int]:
    """The quit signals (``QUIT_SIGNALS``) this process receives from here on, as circus's handler takes them (it
    only queues a quit on its event loop, which a failed start never runs: the stop would be lost with the exec)."""
    received: list[int] = []
    try:
        from circus.sighandler import SysHandler  # type: ignore[import-untyped]
    except ImportError:  # a BentoML without circus: nothing is started again (internal_port_taken is circus's)
        return received
    handle = SysHandler.signal

    def signal(self: Any, sig: int, frame: Any = None) -> Any:
        if sig in QUIT_SIGNALS:
            received.append(sig)
        return handle(self, sig, frame)

    SysHandler.signal = signal
    return received


def exec_holding_stops(argv: list[str], env: dict[str, str]) -> None:
    """Replace this process with ``python ARGV`` (this module's ``main``, which lets the held stops in). A stop
    (``STOPS``) from here on waits, blocked, for the new program: a Python handler's flag would be lost with this
    process's image, and the stop with it (the server started and served on). One received before is raised here,
    as its handler raises it."""
    previous = {}
    try:
        signal_module.pthread_sigmask(signal_module.SIG_BLOCK, STOPS)  # runs the handlers of stops received already
        # Other threads (ONNX Runtime's, numpy's) do not share this mask: a stop sent to the process may land on
        # one, where a Python handler would only set a flag the exec discards. It ends the process instead.
        for stop in STOPS:
            if signal_module.getsignal(stop) is not signal_module.SIG_IGN:
                previous[stop] = signal_module.signal(stop, signal_module.SIG_DFL)
        os.execve(sys.executable, [sys.executable, *argv], env)
    finally:  # the exec failed, or a stop was raised
        give_back(previous)
        signal_module.pthread_sigmask(signal_module.SIG_UNBLOCK, STOPS)


def main(argv: list[str]) -> int:
    try:
        take_over_terminations()  # circus's handlers replace these, and give them back once it has stopped
        signal_module.pthread_sigmask(signal_module.SIG_UNBLOCK, STOPS)  # a stop held across exec_holding_stops
        return _serve(argv)
    except KeyboardInterrupt as exc:  # before circus answers stops itself, or after it gave them back
        return say_stopped(exc, "interrupted")


def _serve(argv: list[str]) -> int:
    with stops_recorded() as seen:
        try:
            # BentoML's imports, pydantic-core's among them
            from .bentoml_compat.command_line import serve_with_own_metrics

            stops = stop_signals()
        except (KeyboardInterrupt, Exception) as exc:  # as in service/__main__.py
            return stopped_while_importing(exc, seen)
    try:
        return serve_with_own_metrics(argv[1:], int(argv[0]))
    except Exception as exc:
        if internal_port_taken(exc):
            return _after_a_lost_control_port(argv, exc, stops)
        if isinstance(exc, OSError) and exc.errno == errno.EADDRINUSE:
            # the user's port, free when serve checked it, taken by another program before BentoML bound it
            from .serve_cli import listen_refusal  # its argument parser's imports: not for every start

            host = argv[argv.index("--host") + 1] if "--host" in argv[:-1] else "127.0.0.1"
            print(
                f"error: {listen_refusal(host, argv[0], exc)} (taken by another program as the server started): "
                "start again, or choose another --port",
                file=sys.stderr,
                flush=True,
            )
            return 2
        raise


def _after_a_lost_control_port(argv: list[str], exc: Exception, stops: list[int]) -> int:
    """The exit status of a start that lost a control port: a stop asked for meanwhile, the last attempt's
    refusal, or (not returning) the next attempt."""
    if stops:  # asked to stop while starting: not started again
        print(f"stopped ({signal_module.Signals(stops[0]).name}) while starting", file=sys.stderr, flush=True)
        return 128 + stops[0]
    attempt = int(os.environ.get(ATTEMPT_ENV) or 1)
    if attempt >= ATTEMPTS:
        print(
            f"error: BentoML's process manager could not bind its control sockets in {ATTEMPTS} starts "
            f"({exc}): other programs are taking local ports as fast as they are freed; start the service again",
            file=sys.stderr,
            flush=True,
        )
        return 1
    print(
        f"BentoML's process manager lost one of its control ports to another program ({exc}); "
        f"starting again ({attempt + 1} of {ATTEMPTS})",
        file=sys.stderr,
        flush=True,
    )
    start_again(argv, attempt + 1)
    return 1  # not reached: start_again replaces this process


if __name__ == "__main__":
    from .process_end import end_process

    end_process(main(sys.argv[1:]))

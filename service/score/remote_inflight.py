"""The requests in flight, and how the run ends them: a stop (Ctrl-C, SIGTERM) or a failure waits for them,
saying so, and a second stop shuts their connections under the workers, whose reads would otherwise wait out
--timeout. Apart from the engine because it is threads, sockets and signals, not the service's protocol.

``InFlight`` is a part of ``remote.RemoteBackend``, whose ``__init__`` sets the state it uses.
"""

from __future__ import annotations

import signal
import socket
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import TYPE_CHECKING, Iterator

from inference.interrupts import Terminated, interrupts_held
from inference.messages import counted

if TYPE_CHECKING:
    import httpx


class InFlight:
    """The run's stop, and the requests in flight that it waits for or abandons."""

    pool: ThreadPoolExecutor
    timeout: float
    _sockets: list[socket.socket]
    _sockets_lock: threading.RLock
    _abandoned: bool
    _posting: int
    _gate: threading.Condition
    _stopped: str | None
    _woken: threading.Event

    def _stop(self, why: str) -> None:
        with self._gate:
            self._stopped = self._stopped or why
        self._woken.set()

    def _pause(self, seconds: float) -> None:
        """A wait between tries (a Retry-After asks for up to a minute) that ends as the run stops: Ctrl-C, or
        another worker finding the service gone, would otherwise wait for it."""
        self._woken.wait(seconds)

    @contextmanager
    def _posted(self) -> Iterator[None]:
        with self._sockets_lock:
            self._posting += 1
        try:
            yield
        finally:
            with self._sockets_lock:
                self._posting -= 1

    def _end_requests(self, stop: KeyboardInterrupt | None = None) -> None:
        """Stop the workers, and let the requests in flight end (each within --timeout), unless a stop comes
        meanwhile (Ctrl-C again, after the one that stopped the run): their rows would be dropped, and the wait is
        the user's, so it is said where requests are in flight. ``stop``: the one that stopped the run, None for a
        failure (or the run's end): a stop during the wait is then raised once the requests have ended, and ends the
        run as a stop anywhere else does."""
        self._stop("the run stopped")
        posting = self._posting
        if posting:
            them = "it" if posting == 1 else "them"
            _say(
                f"waiting for {counted(posting, 'request')} in flight (up to {self.timeout:g} s): "
                f"{_abandoned_by(stop)} to abandon {them}"
            )
        try:
            with interrupts_held(on_stop=self._abandon):
                self.pool.shutdown(wait=True, cancel_futures=True)
        except KeyboardInterrupt:
            # That stop, gone on to a handler that raises it. After a stop, the run has stopped already, its rows and
            # status are the first stop's, and a traceback would say nothing more; after a failure it is the run's
            # first stop: dropped, the run would end as failed (1, or 74), not as stopped.
            if stop is None:
                raise

    def _abandon(self) -> None:
        """End the requests in flight now: their connections are shut, so that each worker's read or write ends
        with an error (closing the client would leave them waiting out --timeout), and any connection made after
        this is shut as it is made."""
        with self._sockets_lock:
            self._abandoned = True
            for sock in self._sockets:
                _shut(sock)

    def _traced(self, request: httpx.Request) -> None:
        request.extensions["trace"] = self._trace

    def _trace(self, event: str, info: dict) -> None:
        """httpcore's trace of a request (an httpx extension): each new connection's socket, for ``_abandon``."""
        if not event.endswith((".connect_tcp.complete", ".start_tls.complete")):
            return
        sock = info["return_value"].get_extra_info("socket")
        if sock is None:
            return
        with self._sockets_lock:
            self._sockets = [s for s in self._sockets if s.fileno() != -1]  # those closed since
            self._sockets.append(sock)
            if self._abandoned:
                _shut(sock)


def _abandoned_by(stop: KeyboardInterrupt | None) -> str:
    """What abandons the requests in flight (any stop does), said after ``stop``, the one that stopped the run:
    a run stopped by a SIGTERM (a container stop, a `kill`) may have no terminal for a Ctrl-C, nor may a run that
    a failure stopped (None)."""
    if stop is None:
        return "Ctrl-C or SIGTERM"
    if isinstance(stop, Terminated):
        return f"{signal.Signals(stop.signum).name} again (or Ctrl-C)"
    return "Ctrl-C again"


def _shut(sock: socket.socket) -> None:
    try:
        # socket's own shutdown for a TLS socket too: SSLSocket's drops its SSL object under a reading thread
        socket.socket.shutdown(sock, socket.SHUT_RDWR)
    except OSError:  # closed already
        pass


def _say(line: str) -> None:
    """A line on stderr that does not land inside the progress bar's line: the bar is cleared, then redrawn below."""
    from tqdm import tqdm

    tqdm.write(line, file=sys.stderr)

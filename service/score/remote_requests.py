"""The remote engine's requests: each POST /classify retried while the service is unreachable or failing, sent
again in smaller requests when it says a request held too many images, image by image when one image spoils a
request, and in halves when the service keeps failing a request (a 5xx, a dropped connection, no answer in time,
an answer that is no classification) until the images it fails on are found, while a plain test image shows that
the service itself works. Apart from the engine's opening and its chunks (remote.py) because what is done with
a failed request is a job of its own, and the longest one.

``RemoteRequests`` is a part of ``remote.RemoteBackend``, whose ``__init__`` sets the state it uses.
"""

from __future__ import annotations

import io
import os
import threading
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Iterator, NamedTuple

from ..contract import REASONS
from .errors import RemoteError
from .remote_answers import _checked_answer, _error_message, _retry_after, _row_error
from .remote_inflight import InFlight, _say
from .remote_options import API_KEY_VARIABLE
from .sinks import Prediction, Row
from .walk import Entry

if TYPE_CHECKING:
    import httpx

# The longest a Retry-After (429, 503) is waited, per retry: a service that asks for longer stops the run, whose rows
# are kept for --resume, rather than holding it without a word.
MAX_RETRY_AFTER = 60.0


class _Failed(NamedTuple):
    """A request the service kept failing: its last status (None: no answer at all), what it said, and whether
    the images sent may be the cause (``images``), or the failure says nothing of them: the service not reached,
    or told to come back later (429, 503 overloaded or loading), which no image sent elsewhere would change."""

    status: int | None
    message: str
    attempts: int
    images: bool
    timed_out: bool = False  # the service was reached, and the last try went unanswered within --timeout

    def said(self) -> str:
        return f"HTTP {self.status}: {self.message}" if self.status is not None else self.message

    def text(self) -> str:
        return (f"failed {self.attempts} times: " if self.attempts > 1 else "failed: ") + self.said()


class RemoteRequests(InFlight):
    """How a chunk's images reach the service, and what is done when it refuses or fails them."""

    # For what says nothing of the images (not reached, 408, 429, 503 overloaded), and for a probe; waits double
    # from RETRY_DELAY, or are the service's Retry-After. What may be the images' is retried once, then isolated.
    RETRIES = 5
    RETRY_DELAY = 0.5
    # A request is not sent again after its second timeout, whatever failed: each costs --timeout (two minutes by
    # default), and a plain test image that goes unanswered twice shows that the service hangs, not an image.
    TIMEOUTS = 2

    httpx: Any  # the module, imported when the engine opens: the scorer's other engines never need it
    client: httpx.Client
    url: str
    workers: int
    per_request: int
    k: int
    model: str | None
    fit: str | None
    name: str | None
    _sending: int
    _blaming: int | None

    def _send(
        self,
        chunk: list[Entry],
        items: list[tuple[int, bytes]],
        rows: list[Row | None],
        isolating: bool = False,
        blame: bool = False,
    ) -> None:
        """``isolating``: ``items`` are part of a request the service failed, and it answered a probe since.
        ``blame``: one image, which the service failed on before it answered a probe: failed again, with no other
        request in flight, it is an error row. Neither is retried: a failure that was not the images' leads at
        worst to an image that is then answered alone, and each retry of an image that hangs costs --timeout."""
        result = self._post(chunk, items, once=isolating or blame)
        if isinstance(result, list):
            for (i, _), row in zip(items, result):
                rows[i] = row
            return
        if isinstance(result, _Failed):
            if blame and result.images:
                i = items[0][0]
                rows[i] = Row(chunk[i].rel, error=_failed_on_image(result))
            else:
                self._isolate(chunk, items, rows, result, isolating)
            return
        status, reason, message = result
        # What to do is the contract's (contract.REASONS); a 413 without a reason is a proxy's body limit.
        remedy = REASONS[reason].remedy if reason in REASONS else "fewer" if status == 413 else "alone"
        if remedy == "stop":
            hint = f" (--api-key, or the {API_KEY_VARIABLE} variable)" if status in (401, 403) else ""
            raise RemoteError(f"the service at {self.url} rejected the request ({status}): {message}{hint}")
        if len(items) == 1:
            entry = chunk[items[0][0]]
            error = _row_error(message)
            if status == 413 and remedy == "fewer":  # a body limit: the service's words are of the request
                error = f"file is {len(items[0][1])} bytes, too large for the service: {error}"
            rows[items[0][0]] = Row(entry.rel, error=error)
        elif remedy == "fewer":
            half = (len(items) + 1) // 2
            self.per_request = min(self.per_request, half)
            self._send(chunk, items[:half], rows)
            self._send(chunk, items[half:], rows)
        else:
            # One unreadable image fails the whole request: resend one by one so only that file is an error row.
            for item in items:
                self._send(chunk, [item], rows)

    def _isolate(
        self,
        chunk: list[Entry],
        items: list[tuple[int, bytes]],
        rows: list[Row | None],
        failed: _Failed,
        isolating: bool,
    ) -> None:
        """A request the service kept failing: its halves are sent, and theirs, down to the images it fails on
        alone, which become error rows, so that one such image (one that crashes a worker, or outlasts a proxy's
        timeout) does not stop the run (and --resume at it again). Each image is blamed only when it fails again
        after the service answered a plain test image: a service that fails that too is failing, or gone, not
        failing on an image, and the run stops, as for a service that is not reached."""
        if not failed.images:
            raise RemoteError(f"the service at {self.url} {failed.text()}")
        if len(items) > 1:
            if not isolating:
                # the probe and each level of halves cost a --timeout where the service hangs: minutes that should
                # not be silent
                _say(
                    f"the service at {self.url} failed a request of {len(items)} images ({failed.said()}): looking "
                    "for the image it fails on"
                )
                self._check_service()
            half = (len(items) + 1) // 2
            self._send(chunk, items[:half], rows, isolating=True)
            self._send(chunk, items[half:], rows, isolating=True)
            return
        with self._alone():
            # the service may have gone since the last probe, or be restarting after this very image
            self._check_service()
            self._send(chunk, items, rows, blame=True)

    @contextmanager
    def _alone(self) -> Iterator[None]:
        """The service to this thread: other workers' requests in flight are waited for, and theirs held back.
        A thread that has it already keeps it: it would otherwise wait for itself."""
        if self._blaming == threading.get_ident():
            yield
            return
        with self._gate:
            self._gate.wait_for(lambda: self._blaming is None)
            self._blaming = threading.get_ident()
            self._gate.wait_for(lambda: self._sending == 0)
        try:
            yield
        finally:
            with self._gate:
                self._blaming = None
                self._gate.notify_all()

    @contextmanager
    def _turn(self) -> Iterator[None]:
        """One request, sent while no other thread has the service to itself (``_alone``)."""
        if self._blaming == threading.get_ident():
            yield
            return
        with self._gate:
            self._gate.wait_for(lambda: self._blaming is None)
            self._sending += 1
        try:
            yield
        finally:
            with self._gate:
                self._sending -= 1
                self._gate.notify_all()

    def _check_service(self) -> None:
        """RemoteError unless the service classifies a plain test image, with every retry. The image is sent with
        the service to this thread: behind this run's other requests a service that takes one at a time could not
        answer it in --timeout, and the run would stop with a working service."""
        with self._alone():
            probe = self._probe()
        if probe is None:
            return
        said = f"the service at {self.url} {probe.text()}, on a plain test image"
        if probe.timed_out:
            # no other request of this run was in flight, but those that timed out may still hold the service
            fewer = ", or lower --workers" if self.workers > 1 else ""
            raise RemoteError(
                f"{said}: the service is failing, or slower than --timeout {self.timeout:g} s allows with "
                f"--workers {self.workers} (raise --timeout{fewer})"
            )
        raise RemoteError(f"{said}: the service is failing, not an image")

    def _probe(self) -> _Failed | None:
        """How the service fails a plain test image, with every retry; None where it answers it (a classification,
        or a refusal: any answer but a failure)."""
        answer = self._exchange([("images", ("probe.png", _probe_image(), "image/png"))], patient=True)
        if isinstance(answer, _Failed) or answer.status_code >= 400:
            return answer if isinstance(answer, _Failed) else None
        checked = _checked_answer(answer, 1)
        return _Failed(answer.status_code, checked, 1, images=True) if isinstance(checked, str) else None

    def _post(
        self, chunk: list[Entry], items: list[tuple[int, bytes]], once: bool = False
    ) -> list[Row] | tuple[int, str | None, str] | _Failed:
        """The rows; (status, reason, message) when the service rejects the request (4xx), reason None where the
        answer names none; ``_Failed`` when it kept failing it, or answered what is not its images'
        classification. ``once``: what may be the images' doing is not retried."""
        files = [
            ("images", (_sendable(os.path.basename(chunk[i].rel)), data, "application/octet-stream"))
            for i, data in items
        ]
        answer = self._exchange(files, patient=False, once=once)
        if isinstance(answer, _Failed):
            return answer
        if answer.status_code >= 400:
            reason, message = _error_message(answer)
            return answer.status_code, reason, message
        checked = _checked_answer(answer, len(items))
        if isinstance(checked, str):
            return _Failed(answer.status_code, checked, 1, images=True)
        if self.name is None:  # a service that does not list its models: the first answer's is the run's
            self.name = checked.model
        elif checked.model != self.name:
            raise RemoteError(
                f"the service at {self.url} answered with model {checked.model!r}, not {self.name!r}, which this "
                "run scores with: its rows would mix two models' predictions (a service that ignores the request's "
                "model, or whose default changed during the run)"
            )
        # Cut to k: a service that gives more than it was asked for (one that ignores k) would write rows longer
        # than the CSV header, which --resume then refuses.
        return [
            Row(chunk[i].rel, [Prediction(t.label, t.index, t.confidence) for t in prediction.top_k[: self.k]])
            for (i, _), prediction in zip(items, checked.predictions)
        ]

    def _exchange(self, files: list, patient: bool, once: bool = False) -> httpx.Response | _Failed:
        """POST /classify, retried while the service is not reached or answers 5xx, 408 or 429: its answer, or
        ``_Failed``. What may be the images' doing is retried once, ``patient``: as often as the rest, ``once``:
        not at all."""
        httpx = self.httpx
        form = self._form()
        delay, attempts, timeouts = self.RETRY_DELAY, 0, 0
        while True:
            if self._stopped is not None:
                raise RemoteError(self._stopped)
            attempts += 1
            wait = delay
            asked = None
            try:
                with self._turn(), self._posted():
                    response = self.client.post("/classify", files=files, data=form)
            except httpx.TransportError as exc:
                unreached = isinstance(exc, (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout))
                timed_out = isinstance(exc, httpx.TimeoutException)
                message = self._transport_message(exc)
                failed = _Failed(None, message, attempts, images=not unreached, timed_out=timed_out and not unreached)
                timeouts += timed_out
            else:
                status = response.status_code
                if status < 500 and status not in (408, 429):
                    return response
                reason, message = _error_message(response)
                later = status in (408, 429) or (reason in REASONS and REASONS[reason].remedy == "later")
                failed = _Failed(status, message, attempts, images=not later)
                asked = _retry_after(response)
                if asked is not None and asked > MAX_RETRY_AFTER:
                    # a service that asks for that long is unavailable, whatever it was sent: no image is blamed
                    return failed._replace(
                        message=f"{message} (it asks to be asked again in {asked:.0f} s)", images=False
                    )
                wait = max(delay, asked or 0.0)
            if self._stopped is not None:  # the run ended while this try was out (``_abandon`` may have cut it)
                raise RemoteError(self._stopped)
            if (
                attempts > self.RETRIES
                or timeouts >= self.TIMEOUTS
                or (failed.images and (once or (not patient and attempts >= 2)))
            ):
                return failed
            if asked is not None:
                _say(
                    f"the service at {self.url} asked to wait {round(wait, 1):g} s ({failed.said()}): waiting "
                    f"(retry {attempts} of {self.RETRIES})"
                )
            self._pause(wait)
            delay *= 2

    def _form(self) -> dict[str, str]:
        """The fields every request of the run sends beside its images."""
        form = {"k": str(self.k)}
        if self.model:
            form["model"] = self.model
        if self.fit:
            form["fit"] = self.fit
        return form

    def _transport_message(self, exc: httpx.TransportError) -> str:
        if isinstance(exc, self.httpx.ReadTimeout):
            return f"no answer within {self.timeout:g} s (--timeout)"
        return f"{type(exc).__name__}: {exc}"


def _failed_on_image(failed: _Failed) -> str:
    """The error row of an image the service failed on, alone, before and after it answered a test image."""
    if failed.status is None:
        return f"the service failed on this image: {failed.message}"
    return f"the service failed on this image (HTTP {failed.status}): {failed.message}"


def _probe_image() -> bytes:
    """A plain 32x32 grey PNG, which any service that works classifies."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (32, 32), (128, 128, 128)).save(buffer, "PNG")
    return buffer.getvalue()


def _sendable(name: str) -> str:
    """A file name as UTF-8 can carry it: a name that is not UTF-8 on disk holds surrogate escapes, which the HTTP
    client refuses to encode. The service uses the name only to label its answer; rows are matched by position."""
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "replace")

"""The remote engine: a running service's POST /classify, with retries, smaller requests when it says a
request held too many images, image by image when one image spoils a request, and halves of a request the
service keeps failing (a 5xx, a dropped connection, no answer in time, an answer that is no classification)
until the images it fails on are found, while a plain test image shows that the service itself works."""

from __future__ import annotations

import email.utils
import io
import os
import re
import signal
import socket
import ssl
import sys
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Iterator, NamedTuple

from pydantic import ValidationError

from inference.interrupts import Terminated, interrupts_held
from inference.messages import counted, validation_problems

from ..contract import REASONS, ClassifyError, ClassifyResponse, Limits, ModelList
from .decode import read_error, read_file
from .errors import RemoteError, UserError
from .pipeline import pipeline
from .sinks import Prediction, Row, whole
from .walk import Entry

if TYPE_CHECKING:
    import httpx

DEFAULT_URL_BATCH = 32  # images per request: the service takes at most 64 by default, and batches across requests
DEFAULT_URL_WORKERS = 4
DEFAULT_URL_TIMEOUT = 120.0  # seconds per request
# A multipart part's headers and boundary beside its file's bytes, and the form's other fields: generous, so
# that a request sized to the service's body limit by its files' bytes stays under it.
PART_OVERHEAD = 1024
FORM_OVERHEAD = 4096
# The client's one key; the service's own list of keys is CIFAR_API_KEYS (service/access.py).
API_KEY_VARIABLE = "CIFAR_API_KEY"
# The longest a Retry-After (429, 503) is waited, per retry: a service that asks for longer stops the run, whose rows
# are kept for --resume, rather than holding it without a word.
MAX_RETRY_AFTER = 60.0
# A key is refused in front of the model, at once: a test image not answered by then got past any key check (or
# the service is busy), and the run finds out the rest as it goes.
KEY_CHECK_TIMEOUT = 10.0
KEY_CHECK_NAME = "key-check.png"  # the test image's name in that request, as a log of the service shows it


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


class RemoteBackend:
    """A running service: ``workers`` threads each reading a chunk's files and POSTing them to ``URL/classify``."""

    # For what says nothing of the images (not reached, 408, 429, 503 overloaded), and for a probe; waits double
    # from RETRY_DELAY, or are the service's Retry-After. What may be the images' is retried once, then isolated.
    RETRIES = 5
    RETRY_DELAY = 0.5
    READY_POLL_S = 0.5
    # A request is not sent again after its second timeout, whatever failed: each costs --timeout (two minutes by
    # default), and a plain test image that goes unanswered twice shows that the service hangs, not an image.
    TIMEOUTS = 2

    def __init__(
        self,
        url: str,
        model: str | None,
        workers: int | None,
        timeout: float,
        per_request: int,
        fit: str | None = None,
        api_key: str | None = None,
    ) -> None:
        import httpx

        self.httpx = httpx
        self.url = checked_url(url).rstrip("/")
        api_key = _checked_key(api_key)
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        # Every connection's socket, which ``_abandon`` shuts under the requests in flight.
        self._sockets: list[socket.socket] = []
        # re-entrant: a stop's handler (``_abandon``) may run inside another's, on the thread that holds it
        self._sockets_lock = threading.RLock()
        self._abandoned = False
        self._posting = 0  # requests sent and not yet answered, for the line that says the run waits for them
        self.client = httpx.Client(
            base_url=self.url, timeout=timeout, headers=headers, event_hooks={"request": [self._traced]}
        )
        self.timeout = timeout
        self.workers = DEFAULT_URL_WORKERS if workers is None else workers
        self.inflight = self.workers
        self.per_request = per_request  # lowered when the service says a request held too many images
        self.batch_size = per_request  # images per chunk of the walk
        self.k = 5
        self.max_body_bytes: int | None = None  # the service's, when it says (GET /models' limits)
        self.name, self.classes = self._model_info(model)
        # Every request names the model, the service's default included: a default that changes during the run (a
        # restart, or a rolling update behind a load balancer) would otherwise answer part of the rows with another.
        self.model = self.name
        self.fit = fit  # None: the service's model's own
        self._check_key(api_key is not None)
        self.pool = ThreadPoolExecutor(self.workers, thread_name_prefix="score-post")
        # An image is blamed by a request of it alone while no other worker's request is in flight: another
        # worker's image that crashes the service would otherwise fail it too (``_alone``).
        self._gate = threading.Condition()
        self._sending = 0
        self._blaming: int | None = None  # the thread that has the service to itself
        # Why the run stops (a worker found the service failing, or the run ended): every worker's next request
        # raises it rather than spend more timeouts on a service, or a run, that is gone.
        self._stopped: str | None = None
        self._woken = threading.Event()  # set as the run stops: a worker's wait between tries ends there

    def _model_info(self, model: str | None) -> tuple[str | None, list[str] | None]:
        """(model name, classes) from GET /models; (model, None) when the service does not list its models."""
        httpx = self.httpx
        try:
            self._wait_ready()
            listing = self.client.get("/models")
        except httpx.HTTPError as exc:
            raise UserError(f"cannot reach the service at {self.url}: {exc}{_tls_hint(self.url, exc)}") from None
        try:
            listed = ModelList.model_validate_json(listing.content)
        except ValidationError:
            return model, None
        self._take(listed.limits)
        models = {m.name: m.classes for m in listed.models}
        name = model or listed.default
        if name not in models:
            raise UserError(f"unknown model {name!r}; the service at {self.url} has: {', '.join(models)}")
        return name, models[name]

    def _check_key(self, given: bool) -> None:
        """UserError where the service refuses a plain test image for its key (401, 403): GET /models and /readyz
        ask for none, so a missing or wrong key would otherwise be found at the first request, after the output was
        created, or a --resume'd one touched. Any other answer, or none in time, is left to the run."""
        # k=1: the run's k is capped at the model's classes only later, and a service counts a bad k as a caller's
        # mistake in its metrics.
        form = {**self._form(), "k": "1"}
        try:
            answer = self.client.post(
                "/classify",
                files=[("images", (KEY_CHECK_NAME, _probe_image(), "image/png"))],
                data=form,
                timeout=min(self.timeout, KEY_CHECK_TIMEOUT),
            )
        except self.httpx.HTTPError:
            return
        if answer.status_code not in (401, 403):
            return
        self.client.close()
        if not given:
            raise UserError(
                f"the service at {self.url} requires an API key and none was given: give it with --api-key KEY, or "
                f"the {API_KEY_VARIABLE} variable (ask the service's operator for one)"
            )
        why = (
            "check it, or ask the service's operator for one"
            if answer.status_code == 403
            else f"HTTP 401: {_one_line(_error_message(answer)[1])}"
        )
        raise UserError(
            f"the service at {self.url} does not accept the API key given (--api-key, or the {API_KEY_VARIABLE} "
            f"variable): {why}"
        )

    def _wait_ready(self) -> None:
        """Until GET /readyz answers 200: a service started moments ago answers 503 while its workers load their
        models (seconds to a minute), so that is waited out, up to the request timeout, and said once; any other
        answer is no service that will become ready on its own."""
        deadline = time.monotonic() + self.timeout
        said = False
        while True:
            ready = self.client.get("/readyz")
            if ready.status_code == 200:
                return
            if ready.status_code == 404:
                raise UserError(self._no_service(ready))
            if ready.status_code != 503 or time.monotonic() >= deadline:
                waited = f" after {self.timeout:g} s (--timeout)" if ready.status_code == 503 else ""
                raise UserError(
                    f"the service at {self.url} is not ready{waited}: GET /readyz answered {ready.status_code}: "
                    f"{_one_line(_error_message(ready)[1])}"
                )
            if not said:
                _say(f"waiting for the service at {self.url} to be ready (its models loading)")
                said = True
            time.sleep(self.READY_POLL_S)

    def _no_service(self, answer: httpx.Response) -> str:
        """Why a URL whose /readyz is not found serves no scoring: most often it names a path of the service
        (http://host:3000/classify), whose own address is then suggested."""
        said = f"no scoring service at {self.url}: GET {self.url}/readyz answered 404"
        origin = str(self.httpx.URL(self.url).copy_with(path="/", query=None, fragment=None)).rstrip("/")
        if origin != self.url:
            try:
                if self.client.get(f"{origin}/readyz").status_code == 200:
                    return f"{said}; the service is at {origin}: --url {origin} (its address, without a path)"
            except self.httpx.HTTPError:
                pass
        page = answer.headers.get("content-type", "").startswith("text/html")
        what = "a web page" if page else _one_line(_error_message(answer)[1])
        return f"{said} ({what}): is it the address `python -m service serve` serves?"

    def _take(self, limits: Limits | None) -> None:
        """Requests sized to what the service says it takes, so that none is refused for its size first."""
        if limits is None:  # a service from before it listed its limits: learnt from its refusals instead
            return
        self.per_request = min(self.per_request, limits.max_images)
        self.max_body_bytes = limits.max_body_bytes

    def _request_size(self, items: list[tuple[int, bytes]]) -> int:
        """How many of ``items``, from the first, make the next request: at most per_request images and, when the
        service's body limit is known, as many as fit in it (at least one: a file over the limit alone is
        refused with the service's own message)."""
        if self.max_body_bytes is None:
            return self.per_request
        room, count = self.max_body_bytes - FORM_OVERHEAD, 0
        for _, data in items[: self.per_request]:
            room -= len(data) + PART_OVERHEAD
            if room < 0:
                break
            count += 1
        return max(1, count)

    def rows(self, chunks: Iterator[list[Entry]]) -> Iterator[list[Row]]:
        """The rows of ``chunks``. A stop (Ctrl-C, SIGTERM: raised here, or thrown in by the run, stopped between
        two rows) or a failure (the service's, or the run's own, which closes this) has the requests in flight
        waited for here, where the wait can be said, before the run's summary. A stop during that wait abandons
        them: after a stop it is dropped, after a failure it is raised (the run ends as stopped)."""
        try:
            yield from pipeline(chunks, self)
        except KeyboardInterrupt as stop:
            self._end_requests(stop)
            raise
        except (Exception, GeneratorExit):  # GeneratorExit: the run closed it, a write having failed
            self._end_requests()
            raise

    def submit(self, chunk: list[Entry]) -> Future:
        return self.pool.submit(self._score_chunk, chunk)

    def finish(self, chunk: list[Entry], handle: Future) -> list[Row]:
        return handle.result()

    def _score_chunk(self, chunk: list[Entry]) -> list[Row]:
        try:
            return self._score(chunk)
        except RemoteError as exc:
            self._stop(str(exc))
            raise

    def _stop(self, why: str) -> None:
        with self._gate:
            self._stopped = self._stopped or why
        self._woken.set()

    def _pause(self, seconds: float) -> None:
        """A wait between tries (a Retry-After asks for up to a minute) that ends as the run stops: Ctrl-C, or
        another worker finding the service gone, would otherwise wait for it."""
        self._woken.wait(seconds)

    def _score(self, chunk: list[Entry]) -> list[Row]:
        rows: list[Row | None] = [None] * len(chunk)
        items = []
        for i, e in enumerate(chunk):
            if e.error:
                rows[i] = Row(e.rel, error=e.error)
                continue
            try:
                data = read_file(e.path)
            except OSError as exc:
                rows[i] = Row(e.rel, error=read_error(exc))
                continue
            if self.max_body_bytes is not None and len(data) >= self.max_body_bytes:
                # not sent: its request, the file and the form's own bytes, could only be refused, after the whole
                # upload (one a little under the limit is sent: the form's bytes are only estimated here)
                rows[i] = Row(e.rel, error=_over_the_body_limit(len(data), self.max_body_bytes))
                continue
            items.append((i, data))
        while items:
            size = self._request_size(items)
            self._send(chunk, items[:size], rows)
            items = items[size:]
        return whole(rows)

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

    @contextmanager
    def _posted(self) -> Iterator[None]:
        with self._sockets_lock:
            self._posting += 1
        try:
            yield
        finally:
            with self._sockets_lock:
                self._posting -= 1

    def close(self) -> None:
        self._end_requests()
        self.client.close()

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


def checked_url(url: str) -> str:
    """``url``, or a UserError naming it and what is wrong with it: httpx's own error would be a traceback, or
    an "unsupported protocol 'localhost://'" for a URL that only lacks its http://."""
    import httpx

    if url != url.strip():  # pasted with a space: httpx keeps a trailing one in the path, and every path 404s
        raise UserError(f"--url {url!r} has spaces around it: --url {url.strip()}")
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL as exc:
        raise UserError(f"--url {url!r} is not a valid URL: {exc}") from None
    if "://" not in url or not parsed.scheme:
        # "http:/host" and "http//host" are a mistyped protocol, not a host named "http"
        address = re.sub(r"^https?(?::/*|/+)", "", url.split("://")[-1], flags=re.IGNORECASE)
        raise UserError(f"--url {url!r} names no protocol: did you mean --url http://{address}?")
    if parsed.scheme not in ("http", "https"):
        raise UserError(f"--url {url!r}: the service is reached by http:// or https://, not {parsed.scheme}://")
    if not parsed.host:
        raise UserError(f"--url {url!r} names no host (as in http://localhost:3000)")
    if parsed.query:
        # httpx joins a base URL's query with a request's path by dropping the path: every request would go to "/"
        raise UserError(f"--url {url!r} has a query (?{parsed.query.decode()}): give the service's address alone")
    if parsed.port is not None and not 0 < parsed.port < 65536:
        raise UserError(f"--url {url!r}: port {parsed.port} is not a TCP port (1 to 65535)")
    return url


def _checked_key(key: str | None) -> str | None:
    """The key as the service compares it (without the spaces and line ends around it, as it reads its own list of
    keys: a key read from a file keeps its newline), or a UserError that does not show it, for a key no HTTP header
    can carry: httpx's own errors are a traceback (a non-ASCII letter) or a message quoting the key."""
    key = (key or "").strip()
    if not all(" " <= c <= "~" for c in key):
        raise UserError(
            f"the API key (--api-key, or the {API_KEY_VARIABLE} variable) holds a character an HTTP header cannot "
            "carry (a control character or a non-ASCII letter): give the key alone"
        )
    return key or None


def _one_line(text: str, most: int = 200) -> str:
    """A service's or a web server's words (an HTML error page spans many lines) on one line, cut to ``most``."""
    return " ".join(text.split())[:most]


def _tls_hint(url: str, exc: Exception) -> str:
    """A hint for an https:// URL whose TLS handshake failed for another reason than its certificate: most often
    a service that speaks plain HTTP (as `python -m service serve` does) on that port."""
    cause: BaseException | None = exc
    while cause is not None and not isinstance(cause, ssl.SSLError):
        cause = cause.__cause__ or cause.__context__
    if cause is None or isinstance(cause, ssl.SSLCertVerificationError):
        return ""
    return f" (no TLS there: a plain HTTP service? --url http://{url.split('://', 1)[1]})"


def _checked_answer(response, count: int) -> ClassifyResponse | str:
    """The answer to a request of ``count`` images, or why it is none: rows are matched to images by position,
    so an answer with another number of predictions cannot be written."""
    try:
        answer = ClassifyResponse.model_validate_json(response.content)
    except ValidationError as exc:
        what = "not JSON" if exc.errors()[0]["type"] == "json_invalid" else validation_problems(exc, limit=200)
        kind = response.headers.get("content-type", "no content type").split(";")[0]
        return f"an answer that is no classification ({what}; {kind}): {response.text.strip()[:200]!r}"
    if len(answer.predictions) != count:
        return f"an answer with {counted(len(answer.predictions), 'prediction')} for {counted(count, 'image')}"
    return answer


def _say(line: str) -> None:
    """A line on stderr that does not land inside the progress bar's line: the bar is cleared, then redrawn below."""
    from tqdm import tqdm

    tqdm.write(line, file=sys.stderr)


def _failed_on_image(failed: _Failed) -> str:
    """The error row of an image the service failed on, alone, before and after it answered a test image."""
    if failed.status is None:
        return f"the service failed on this image: {failed.message}"
    return f"the service failed on this image (HTTP {failed.status}): {failed.message}"


def _retry_after(response) -> float | None:
    """The seconds a Retry-After header asks to wait (a number, or an HTTP date), or None."""
    value = response.headers.get("retry-after", "").strip()
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, (when - datetime.now(timezone.utc)).total_seconds())


def _error_message(response) -> tuple[str | None, str]:
    """(reason, message) of an error answer: the service's ``ClassifyError``, or what else it says."""
    try:
        refusal = ClassifyError.model_validate_json(response.content)
        return refusal.reason, refusal.error
    except ValueError:
        pass
    try:
        body = response.json()
    except ValueError:
        return None, response.text.strip()[:500] or f"HTTP {response.status_code}"
    if isinstance(body, dict):
        reason = body.get("reason") if isinstance(body.get("reason"), str) else None
        for key in ("error", "detail", "message"):
            if body.get(key):
                value = body[key]
                return reason, value if isinstance(value, str) else str(value)[:500]
    return None, str(body)[:500]


# How the service names the image of a one-image request: "images[0]", then the file name it received as Python's
# repr writes it (in single quotes, or double ones when the name holds a single quote), which need not be the name
# sent: a client may percent-encode a quote in a multipart header. Then ": " or " is an " ("... is an empty file").
_SERVICE_NAMING = re.compile(r"""images\[0\](?: \((?:'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*")\))?(?:: | is an )""")


def _over_the_body_limit(size: int, limit: int) -> str:
    return f"file is {size} bytes, too large for the service: its requests are limited to {limit} bytes"


def _row_error(message: str) -> str:
    """The service's refusal of a one-image request as the local engines word the row: without the
    "images[0] ('name')" the service names the image by (the row names the file already)."""
    named = _SERVICE_NAMING.match(message)
    return message[named.end() :] if named else message


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

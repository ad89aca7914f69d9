"""The remote engine: a running service's POST /classify, its model and limits read first, its key checked
before the output is touched, and the walk's chunks sent by a pool of workers. How each request is sent, retried
and narrowed down when the service fails it is remote_requests.py's; how a stop ends the requests in flight is
remote_inflight.py's; reading the service's answers is remote_answers.py's, and checking --url and --api-key
remote_options.py's."""

from __future__ import annotations

import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Iterator

from pydantic import ValidationError

from ..contract import Limits, ModelList
from .decode import read_error, read_file
from .errors import RemoteError, UserError
from .pipeline import pipeline
from .remote_answers import _error_message, _one_line, _over_the_body_limit
from .remote_inflight import _say
from .remote_options import API_KEY_VARIABLE, _checked_key, _tls_hint, checked_url
from .remote_requests import RemoteRequests, _probe_image
from .sinks import Row, whole
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
# A key is refused in front of the model, at once: a test image not answered by then got past any key check (or
# the service is busy), and the run finds out the rest as it goes.
KEY_CHECK_TIMEOUT = 10.0
KEY_CHECK_NAME = "key-check.png"  # the test image's name in that request, as a log of the service shows it


class RemoteBackend(RemoteRequests):
    """A running service: ``workers`` threads each reading a chunk's files and POSTing them to ``URL/classify``."""

    READY_POLL_S = 0.5

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
        self._sockets = []
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

    def close(self) -> None:
        self._end_requests()
        self.client.close()

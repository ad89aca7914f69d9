"""The ASGI middleware in front of BentoML's routes: each answers what would otherwise reach a route as BentoML
answers it (a plain-text 404 or 405, a generic 400, a 504 while the models load) with the contract's refusal, its
reason, status and count, so that a client reads every refusal the same way.
"""

from __future__ import annotations

import asyncio
from typing import Any

import anyio
import bentoml
from bentoml.exceptions import BentoMLException
from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Message

from .access import send_rejection
from .bentoml_compat.route_labels import UNMATCHED, route_label
from .contract import Rejection, not_loaded
from .disconnects import abandon_when_gone, client_left, has_left
from .request_bodies import GATED_INPUT, InferInput, NoInput
from .startup import SETTINGS

# The methods of the paths BentoML's API routes serve (/models also has the mounted GET listing). BentoML answers
# any other method, OPTIONS included, with a plain-text 405 naming POST alone.
API_METHODS: dict[str, tuple[str, ...]] = {
    "/classify": ("POST", "OPTIONS"),
    "/infer": ("POST", "OPTIONS"),
    "/models": ("GET", "HEAD", "POST", "OPTIONS"),
}


def worker_service() -> Any:
    """The worker's service, its models loaded or not."""
    try:
        return bentoml.get_current_service()
    except BentoMLException:  # not instantiated (yet): at build time, or before the worker made it
        return None


class LoadGate:
    """ASGI middleware: a request to an API route (``API_METHODS``) that arrives while this worker loads its models
    waits for them before its body is read and checked against them, up to ``LOAD_WAIT_MARGIN_S`` before
    --timeout; still loading then (or no service made yet), it is refused 503 ``loading`` with Retry-After.
    BentoML's 504 at --timeout would tell the client to send fewer images. Health, metrics and the protocol's routes
    answer meanwhile; a method the route does not take is refused at once (MethodGate)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        allowed = API_METHODS.get(scope["path"], ()) if scope["type"] == "http" else ()
        if scope.get("method") in allowed and scope["method"] != "OPTIONS":
            instance = worker_service()
            if instance is None or not await _loaded_within(instance, SETTINGS.timeout_s - LOAD_WAIT_MARGIN_S):
                await send_rejection(scope, send, not_loaded())
                return
        await self.app(scope, receive, send)


# How long before --timeout a request waiting for the models is refused: its answer must leave before BentoML's own
# timer, which started with the request, answers 504.
LOAD_WAIT_MARGIN_S = 1.0


async def _loaded_within(instance: Any, seconds: float) -> bool:
    """Whether the worker's models are loaded, waiting for them up to ``seconds``."""
    if instance.ready:
        return True
    with anyio.move_on_after(max(0.0, seconds)):
        await instance.loading.wait()
    return bool(instance.ready)


class BodyGate:
    """ASGI middleware: reads and checks the body of a POST to a JSON API that BentoML would parse (``READERS``),
    answers a refusal itself, in the contract's reason, status and count rather than BentoML's generic 400,
    and leaves what it read in the request's state for the API's input, so the body is parsed once."""

    STATE = GATED_INPUT
    READERS = {"/infer": InferInput.read, "/models": NoInput.read}

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        # The exact path: BentoML serves no "/infer/", which PathGate refuses (404 naming the path without the
        # slash) whatever its body; read here, a bad body would be refused as if the path were served.
        read = self.READERS.get(scope["path"]) if scope["type"] == "http" else None
        if read is None or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        given = await read(Request(scope, receive))
        if isinstance(given, Rejection):
            await send_rejection(scope, send, given)
            return
        scope.setdefault("state", {})[self.STATE] = given
        items = given.items if isinstance(given, InferInput) else []
        # A task of its own, not a task group's: an error of the app reaches the server as it is, not in a group
        watcher = asyncio.ensure_future(abandon_when_gone(receive, items)) if items else None
        replaced = False

        async def answer(message: Message) -> None:
            # A client gone while its images waited is answered 499 in the log and the request metrics, as
            # /classify's and /v2's are: BentoML's route would answer 200, with empty rows, to no one.
            nonlocal replaced
            if replaced:  # the route's answer to no one, already answered for
                return
            if message["type"] == "http.response.start" and has_left(watcher):
                replaced = True
                await send_rejection(scope, send, client_left())
                return
            await send(message)

        try:
            await self.app(scope, receive, answer)
        finally:
            if watcher is not None:
                watcher.cancel()
            # Answered, or cancelled by BentoML's timeout (which answers 504 itself): a row of this request still
            # queued in BentoML's own batching queue is run for no one otherwise.
            for item in items:
                item.abandon()


class MethodGate:
    """ASGI middleware: OPTIONS on an API path answers what the path takes (204, ``Allow``), and another method
    it does not take is refused in the contract's shape (405 ``method_not_allowed``) with the same ``Allow``."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        allowed = API_METHODS.get(scope["path"]) if scope["type"] == "http" else None
        if allowed is None or (scope["method"] in allowed and scope["method"] != "OPTIONS"):
            await self.app(scope, receive, send)
            return
        allow = {"Allow": ", ".join(allowed)}
        if scope["method"] == "OPTIONS":
            await Response(status_code=204, headers=allow)(scope, receive, send)
            return
        await send_rejection(scope, send, _not_allowed(scope, allow["Allow"]), allow)


def _not_allowed(scope, allow: str) -> Rejection:
    """The refusal of a method the path does not take; ``allow``: the methods it does, as the Allow header."""
    message = f"{scope['method'][:20]} is not allowed on {scope['path'][:200]}; it takes {allow or 'other methods'}"
    return Rejection("method_not_allowed", message)


class PathGate:
    """ASGI middleware: a path no route takes is refused in the shape of every other refusal (404
    ``no_such_path``, naming the API's paths). BentoML's router answers it with the text "Not Found", which a
    client reading every other refusal's JSON cannot parse; that router is BentoML's, outside the app mounted
    here, so an exception handler of ours never sees the request."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or route_label(scope) != UNMATCHED:
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        bare = path.rstrip("/")
        if bare and bare != path and route_label({**scope, "path": bare}) != UNMATCHED:
            message = f"no {path[:200]!r} on this service: did you mean {bare[:200]!r}, without the trailing slash?"
        else:
            message = _no_such_path(path)
        await send_rejection(scope, send, Rejection("no_such_path", message))


def _no_such_path(path: str) -> str:
    return (
        f"no {path[:200]!r} on this service: the API is /classify, /infer, /models and /v2/... "
        "(the Open Inference Protocol), described at /docs.json"
    )


class PlainRefusalGate:
    """ASGI middleware: the 404 and 405 that the routers answer in plain text ("Method Not Allowed" for a POST
    to a GET-only route such as /readyz or /v2, "Not Found" for a missing file under /static) become the
    contract's refusal, as PathGate's and MethodGate's are; a 405 keeps the route's ``Allow``. Only a plain-text
    answer is replaced: the routes' own JSON refusals pass as they are."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        replaced = False

        async def guarded(message) -> None:
            nonlocal replaced
            if replaced:  # the plain body, already answered for
                return
            if message["type"] == "http.response.start" and message["status"] in (404, 405):
                headers = Headers(raw=message["headers"])
                if headers.get("content-type", "").startswith("text/plain"):
                    replaced = True
                    await send_rejection(scope, send, *self._refusal(scope, message["status"], headers))
                    return
            await send(message)

        await self.app(scope, receive, guarded)

    @staticmethod
    def _refusal(scope, status: int, headers: Headers) -> tuple[Rejection, dict[str, str]]:
        if status == 404:
            return Rejection("no_such_path", _no_such_path(scope["path"])), {}
        allow = headers.get("allow", "")
        return _not_allowed(scope, allow), ({"Allow": allow} if allow else {})

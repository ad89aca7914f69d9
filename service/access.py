"""Who may call the service: optional API keys on the inference routes, and optional CORS.

With keys configured (``CIFAR_API_KEYS`` / ``CIFAR_API_KEYS_FILE``), every inference route needs
``Authorization: Bearer <key>``: none is a 401, an unknown key a 403. Health, metrics, model metadata,
the OpenAPI document and the page stay open: they classify nothing. Keys are compared as SHA-256 digests
with ``hmac.compare_digest``, against every key, so that the time taken says nothing about how much of a
key was right, nor which.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import re
from typing import Any

from starlette.datastructures import Headers
from starlette.middleware.cors import CORSMiddleware
from starlette.responses import Response

from .contract import REASONS, ReasonName, Rejection

# The routes that run a model.
_INFERENCE = re.compile(r"^/(classify|infer|v2/models/.+/infer)/?$")

# Under "bentoml": the logger BentoML configures (INFO) in its server processes.
log = logging.getLogger("bentoml.cifar.refusals")
# C0 and C1 controls and the Unicode line and paragraph separators: each ends a line for some reader of the log.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def requires_key(path: str) -> bool:
    return bool(_INFERENCE.match(path))


def _printable(text: str, most: int) -> str:
    """``text`` cut to ``most`` characters with its control characters escaped: a path or file name a client
    chose (``/a%0Ab``) cannot start a line of its own in the log."""
    return _CONTROL.sub(_escaped, text[:most])


def _escaped(found: re.Match[str]) -> str:
    code = ord(found.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def record_refusal(rejection: Rejection, method: str, path: str) -> None:
    """Count a refusal that is the caller's mistake in ``cifar_rejected_inputs_total{reason}``, and log every
    refusal at INFO (the caller's mistake is no warning about the service): one line with the method, path,
    status, reason and message, never the body."""
    from .metrics import ServiceMetrics  # prometheus_client: imported only once a worker serves

    if REASONS[rejection.reason].counted:
        ServiceMetrics.get().reject(rejection.reason)
    log.info(
        "refused %s %s: %d %s: %s",
        _printable(method, 20),
        _printable(path, 200),
        rejection.status,
        rejection.reason,
        _printable(rejection.message, 500),
    )


class PrintableArgs(logging.Filter):
    """For BentoML's access log (``bentoml.access``), which writes the path as the server decoded it: its arguments'
    control characters escaped, as the refusals' are."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(_printable(arg, 2000) if isinstance(arg, str) else arg for arg in record.args)
        return True


class MalformedAsInfo(logging.Filter):
    """For uvicorn's server log (``uvicorn.error``), which logs each request it cannot parse as HTTP (answered 400
    before the app sees it) as a WARNING: a caller's mistake, at INFO as every refusal of this service is."""

    MALFORMED = "Invalid HTTP request received."

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno == logging.WARNING and record.getMessage() == self.MALFORMED:
            record.levelno, record.levelname = logging.INFO, logging.getLevelName(logging.INFO)
        return True


# One instance each: Logger.addFilter skips a filter already there, so a process that builds the service more
# than once (tests, a reload) keeps one of each.
_LOG_FILTERS = {"bentoml.access": PrintableArgs(), "uvicorn.error": MalformedAsInfo()}


def quiet_callers_mistakes() -> None:
    """The service's rule for its logs, on the libraries' loggers: a caller's mistake is no WARNING, and no path a
    caller chose can start a line of its own."""
    # python-multipart logs a WARNING for each malformed body before raising; the client's mistake is answered
    # (400, saying what) and counted, and is no warning about this service.
    logging.getLogger("python_multipart").setLevel(logging.ERROR)
    for name, log_filter in _LOG_FILTERS.items():
        logging.getLogger(name).addFilter(log_filter)


class ContentTypeGate:
    """ASGI middleware, in front of BentoML's access log: a Content-Type that is not ASCII is refused (415) here.
    That log decodes the header as UTF-8 after the answer has started, and other bytes (HTTP lets a header hold
    any) make it fail mid-answer with a traceback and no body; no media type has them."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http":
            given = next((value for name, value in scope["headers"] if name == b"content-type"), b"")
            if not given.isascii():
                shown = _printable(given.decode("latin-1"), 100)
                message = f"the Content-Type {shown!r} is not ASCII: send multipart/form-data or application/json"
                await send_rejection(scope, send, Rejection("unsupported_media_type", message))
                return
        await self.app(scope, receive, send)


def _digest(key: str | bytes) -> bytes:
    return hashlib.sha256(key.encode() if isinstance(key, str) else key).digest()


# The client cannot learn the keys from the service: the one who runs it gives them out.
UNKNOWN_KEY = "unknown API key: send 'Authorization: Bearer KEY' with a key this service accepts (ask its operator)"


class ApiKeyGate:
    """ASGI middleware: refuses inference requests without a known key, in the refused route's error shape."""

    def __init__(self, app: Any, keys: frozenset[str]) -> None:
        if not keys:
            raise ValueError("ApiKeyGate needs at least one key")
        self.app = app
        self._digests = [_digest(key) for key in sorted(keys)]

    def known(self, key: bytes) -> bool:
        digest = _digest(key)
        found = False
        for candidate in self._digests:  # no early exit: every key is compared
            found |= hmac.compare_digest(candidate, digest)
        return found

    async def __call__(self, scope, receive, send) -> None:
        # Only a POST runs a model: another method is refused on these paths (405, not counted) with or without a
        # key; asking it for one first would count a wrong method as an `unauthorized` input.
        if scope["type"] != "http" or scope["method"] != "POST" or not requires_key(scope["path"]):
            await self.app(scope, receive, send)
            return
        given = [value for name, value in scope["headers"] if name == b"authorization"]
        scheme, _, key = (given[0] if given else b"").strip().partition(b" ")
        if len(given) > 1:
            # which one counts differs between proxies and servers (the first, the last, both joined): none here
            await self._refuse(scope, send, "unauthorized", "more than one Authorization header: send one")
        elif scheme.lower() != b"bearer" or not key.strip():
            await self._refuse(
                scope, send, "unauthorized", "this service requires an API key: 'Authorization: Bearer KEY'"
            )
        elif not self.known(key.strip()):
            await self._refuse(scope, send, "forbidden", UNKNOWN_KEY)
        else:
            await self.app(scope, receive, send)

    @staticmethod
    async def _refuse(scope, send, reason: ReasonName, message: str) -> None:
        await send_rejection(scope, send, Rejection(reason, message))


def _protocol_path(path: str) -> bool:
    """A path of the Open Inference Protocol, whose errors are its own object ``{"error"}``."""
    return path == "/v2" or path.startswith("/v2/")


async def send_rejection(scope, send, rejection: Rejection, headers: dict[str, str] | None = None) -> None:
    """Answer a refusal from ASGI middleware, before the app sees the request: counted as the app counts it,
    in the Open Inference Protocol's error object on its routes and the contract's elsewhere. ``headers`` are
    added to the rejection's own (a 405's ``Allow``)."""
    record_refusal(rejection, scope["method"], scope["path"])
    body = {"error": rejection.message} if _protocol_path(scope["path"]) else rejection.body()
    payload = json.dumps(body).encode()
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
    raw += [(name.lower().encode(), value.encode()) for name, value in {**rejection.headers, **(headers or {})}.items()]
    await send({"type": "http.response.start", "status": rejection.status, "headers": raw})
    await send({"type": "http.response.body", "body": payload})


CORS_METHODS = ("GET", "POST", "OPTIONS")
CORS_HEADERS = ("Authorization", "Content-Type")


def cors_options(origins: list[str]) -> dict[str, Any]:
    """starlette's CORSMiddleware options for ``origins``: the methods and headers the API uses."""
    return {
        "allow_origins": origins,
        "allow_methods": list(CORS_METHODS),
        "allow_headers": list(CORS_HEADERS),
        "max_age": 600,
    }


def _preflight_headers(scope) -> Headers | None:
    """A browser's CORS preflight's headers (as starlette tells one: OPTIONS with Origin and
    Access-Control-Request-Method), or None for any other request."""
    if scope["type"] != "http" or scope["method"] != "OPTIONS":
        return None
    headers = Headers(scope=scope)
    return headers if "origin" in headers and "access-control-request-method" in headers else None


class CorsGate(CORSMiddleware):
    """starlette's CORS middleware, whose refused preflight is answered like every other refusal (400
    ``cors_refused`` in JSON, saying what was refused and what the service allows) instead of its text
    "Disallowed CORS origin", which the page's script or a developer's console would show as it is."""

    def __init__(self, app: Any, allow_origins: list[str], **options: Any) -> None:
        super().__init__(app, allow_origins=allow_origins, **options)
        self._origins = allow_origins

    async def __call__(self, scope, receive, send) -> None:
        headers = _preflight_headers(scope)
        if headers is None:
            await super().__call__(scope, receive, send)
            return
        response = self.preflight_response(request_headers=headers)
        if response.status_code == 400:
            await send_rejection(scope, send, self._refusal(response, headers), self._kept_headers(response))
        else:
            await response(scope, receive, send)

    def _refusal(self, response: Response, asked: Headers) -> Rejection:
        failures = bytes(response.body).decode().removeprefix("Disallowed CORS ").split(", ")
        refused = []  # what the browser asked for that is not allowed, in starlette's order of checks
        for failure in failures:
            if failure == "origin":
                refused.append(f"the origin {asked['origin'][:100]!r}")
            elif failure == "method":
                refused.append(f"the method {asked['access-control-request-method'][:20]!r}")
            elif failure == "headers":
                names = [name.strip().lower() for name in asked.get("access-control-request-headers", "").split(",")]
                named = ", ".join(repr(name[:50]) for name in names if name and name not in self.allow_headers)
                refused.append(f"the request header(s) {named[:200]}")
            else:  # private-network, or what a later starlette checks
                refused.append(failure[:50])
        # starlette adds the CORS-safelisted headers to the ones named, as its Access-Control-Allow-Headers says
        allowed_headers = sorted({name.title() for name in self.allow_headers})
        return Rejection(
            "cors_refused",
            f"CORS preflight refused ({'; '.join(refused)}): this service allows the origins "
            f"{', '.join(self._origins)}, the methods {', '.join(CORS_METHODS)} and the request headers "
            f"{', '.join(allowed_headers)} (CIFAR_CORS_ORIGINS names the origins)",
        )

    @staticmethod
    def _kept_headers(response: Response) -> dict[str, str]:
        """starlette's preflight headers (the methods, headers and max-age allowed, Vary), not its body's."""
        return {k: v for k, v in response.headers.items() if k not in ("content-length", "content-type")}

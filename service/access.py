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
import re
from typing import Any

from .contract import REASONS, ReasonName, Rejection

# The routes that run a model.
_INFERENCE = re.compile(r"^/(classify|infer|v2/models/.+/infer)/?$")


def requires_key(path: str) -> bool:
    return bool(_INFERENCE.match(path))


def _digest(key: str | bytes) -> bytes:
    return hashlib.sha256(key.encode() if isinstance(key, str) else key).digest()


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
        if scope["type"] != "http" or scope["method"] == "OPTIONS" or not requires_key(scope["path"]):
            await self.app(scope, receive, send)
            return
        authorization = dict(scope["headers"]).get(b"authorization", b"")
        scheme, _, key = authorization.strip().partition(b" ")
        if scheme.lower() != b"bearer" or not key.strip():
            await self._refuse(
                scope, send, "unauthorized", "this service requires an API key: 'Authorization: Bearer KEY'"
            )
        elif not self.known(key.strip()):
            await self._refuse(scope, send, "forbidden", "unknown API key")
        else:
            await self.app(scope, receive, send)

    @staticmethod
    async def _refuse(scope, send, reason: ReasonName, message: str) -> None:
        await send_rejection(scope, send, Rejection(reason, message))


async def send_rejection(scope, send, rejection: Rejection, headers: dict[str, str] | None = None) -> None:
    """Answer a refusal from ASGI middleware, before the app sees the request: counted as the app counts it,
    in the Open Inference Protocol's error object on its routes and the contract's elsewhere. ``headers`` are
    added to the rejection's own (a 405's ``Allow``)."""
    from .metrics import ServiceMetrics  # prometheus_client: imported only once a worker serves

    if REASONS[rejection.reason].counted:
        ServiceMetrics.get().reject(rejection.reason)
    body = {"error": rejection.message} if scope["path"].startswith("/v2/") else rejection.body()
    payload = json.dumps(body).encode()
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
    raw += [(name.lower().encode(), value.encode()) for name, value in {**rejection.headers, **(headers or {})}.items()]
    await send({"type": "http.response.start", "status": rejection.status, "headers": raw})
    await send({"type": "http.response.body", "body": payload})


def cors_options(origins: list[str]) -> dict[str, Any]:
    """starlette's CORSMiddleware options for ``origins``: the methods and headers the API uses."""
    return {
        "allow_origins": origins,
        "allow_methods": ["GET", "POST", "OPTIONS"],
        "allow_headers": ["Authorization", "Content-Type"],
        "max_age": 600,
    }

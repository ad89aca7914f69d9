"""What the user gives to reach the service, --url and --api-key, checked before any request: httpx's own
errors for them are a traceback, a message quoting the key, or one that does not say what to type instead. A
TLS handshake that fails on the URL is the URL's mistake too, most often, and is worded here beside it.
"""

from __future__ import annotations

import re
import ssl

from .errors import UserError

# The client's one key; the service's own list of keys is CIFAR_API_KEYS (service/access.py).
API_KEY_VARIABLE = "CIFAR_API_KEY"


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


def _tls_hint(url: str, exc: Exception) -> str:
    """A hint for an https:// URL whose TLS handshake failed for another reason than its certificate: most often
    a service that speaks plain HTTP (as `python -m service serve` does) on that port."""
    cause: BaseException | None = exc
    while cause is not None and not isinstance(cause, ssl.SSLError):
        cause = cause.__cause__ or cause.__context__
    if cause is None or isinstance(cause, ssl.SSLCertVerificationError):
        return ""
    return f" (no TLS there: a plain HTTP service? --url http://{url.split('://', 1)[1]})"

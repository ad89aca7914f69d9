"""What a service's answer means to the client: a classification checked against the images sent, an error's
reason and message, a Retry-After's seconds, and a refusal worded as a row. Apart from the engine because these
read the service's words, tied to the contract (service/contract.py) and to what else a proxy or web server may
answer, rather than to how the engine sends its requests.
"""

from __future__ import annotations

import email.utils
import re
from datetime import datetime, timezone

from pydantic import ValidationError

from inference.messages import counted, validation_problems

from ..contract import ClassifyError, ClassifyResponse


def _one_line(text: str, most: int = 200) -> str:
    """A service's or a web server's words (an HTML error page spans many lines) on one line, cut to ``most``."""
    return " ".join(text.split())[:most]


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

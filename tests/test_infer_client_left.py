"""A client of the direct /infer route that closes its connection while its images wait is recorded as /classify's
and /v2's are: 499 ``client_closed`` in the access log and the request metrics, not BentoML's 200 (with empty rows,
its images having been skipped) to no one."""

from __future__ import annotations

import asyncio
import base64
import json

from fakes import AsgiClient
from service.gates import BodyGate

PIXELS = 32 * 32 * 3


def _scope() -> dict:
    return {
        "type": "http",
        "method": "POST",
        "path": "/infer",
        "headers": [(b"content-type", b"application/json")],
        "query_string": b"",
    }


def _body(count: int) -> bytes:
    pixels = base64.b64encode(bytes(PIXELS)).decode()
    return json.dumps({"items": [{"model": "tiny", "pixels": pixels} for _ in range(count)]}).encode()


async def _route_answers(scope, receive, send, client: AsgiClient | None) -> None:
    """BentoML's /infer route: its rows come back after the queue, an empty one for each item skipped."""
    items = scope["state"][BodyGate.STATE].items
    if client is not None:
        client.leave()
    for _ in range(20):  # the queue's own work goes on meanwhile
        await asyncio.sleep(0)
    rows = [[] if item.abandoned else [0.5, 0.5] for item in items]
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": json.dumps(rows).encode()})


def _sent(leaves: bool) -> list[dict]:
    sent: list[dict] = []
    client = AsgiClient(_body(3))

    async def send(message) -> None:
        sent.append(message)

    async def app(scope, receive, send_) -> None:
        await _route_answers(scope, receive, send_, client if leaves else None)

    asyncio.run(BodyGate(app)(_scope(), client.receive, send))
    return sent


def test_an_infer_client_that_left_while_queued_is_recorded_499():
    sent = _sent(leaves=True)
    starts = [m for m in sent if m["type"] == "http.response.start"]
    assert [m["status"] for m in starts] == [499], sent
    bodies = [json.loads(m["body"]) for m in sent if m["type"] == "http.response.body"]
    assert len(bodies) == 1 and bodies[0]["reason"] == "client_closed", bodies


def test_an_infer_client_that_stays_gets_the_routes_answer():
    sent = _sent(leaves=False)
    assert [m["status"] for m in sent if m["type"] == "http.response.start"] == [200]
    assert [json.loads(m["body"]) for m in sent if m["type"] == "http.response.body"] == [[[0.5, 0.5]] * 3]

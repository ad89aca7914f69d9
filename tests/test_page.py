"""The page at / (service/static/): how it ends a run the service refuses as a whole, gives up on a request that
hangs, says its size limit, and how its files are served so that a browser never runs an old script against a
new service. One real server for the module; the odd answers are Playwright routes in front of it.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator

import httpx
import pytest

from conftest import ROOT, open_page, running_service
from service.contract import REASONS
from service.settings import ServiceSettings
from test_service import _png, _until

APP_JS = ROOT / "service" / "static" / "app.js"
MAX_BODY = 600_000
IMAGES = 8  # twice the page's requests in flight: some are still queued when the first answer comes
TIMEOUT_S = 120  # the server's --timeout: not its default, which the page assumed


@pytest.fixture(scope="module")
def server(tiny_models_dir, tmp_path_factory) -> Iterator[str]:
    log_path = tmp_path_factory.mktemp("server") / "server.log"
    env = {**os.environ, "BENTOML_HOME": str(tmp_path_factory.mktemp("bentoml_home")), "BENTOML_DO_NOT_TRACK": "true"}
    args = ["--max-body-bytes", str(MAX_BODY), "--max-pixels", "1000000", "--threads", "1", "--decode-threads", "1"]
    args += ["--timeout", str(TIMEOUT_S)]
    with running_service(tiny_models_dir, log_path, *args, env=env) as base:
        yield base


def _cards(page) -> list[str]:
    return page.eval_on_selector_all(".answer", "answers => answers.map(a => a.innerText)")


def _app_constant(pattern: str) -> str:
    found = re.search(pattern, APP_JS.read_text(encoding="utf-8"), re.DOTALL)
    assert found, f"app.js has no {pattern!r}"
    return found.group(1)


# ---------------------------------------------------------------------------------------------- a run refused whole
def test_the_pages_run_ending_refusals_are_the_contracts():
    """The page ends a run on the refusals the contract says every image would get alike: a reason added to the
    table for that would otherwise be sent, and refused, once per image."""
    listed = set(re.findall(r'"(\w+)"', _app_constant(r"const STOP_REASONS = new Set\(\[(.*?)\]\)")))
    assert listed == {name for name, reason in REASONS.items() if reason.remedy == "stop"}


def _refuse(status: int, reason: str, error: str) -> Callable:
    return lambda route: route.fulfill(status=status, json={"error": error, "reason": reason})


# (what answers the first request, the line on the page, the note on each card not sent)
REFUSED_WHOLE = {
    "no key": (
        _refuse(401, "unauthorized", "an API key is required (Authorization: Bearer KEY)"),
        "This service asks for an API key.",
        "not sent: this service asks for an API key",
    ),
    "unknown key": (
        _refuse(403, "forbidden", "the API key is not known"),
        "That API key is not known.",
        "not sent: that API key is not known",
    ),
    "a gateway's own login": (
        lambda route: route.fulfill(status=401, content_type="text/html", body="<html>sign in</html>"),
        "This service asks for an API key.",
        "not sent: this service asks for an API key",
    ),
    "threshold refused": (
        _refuse(400, "bad_min_confidence", "min_confidence must be from 0 to 1"),
        "min_confidence must be from 0 to 1",
        "not sent: min_confidence must be from 0 to 1",
    ),
    "service gone": (
        lambda route: route.abort("connectionrefused"),
        "The service could not be reached: Failed to fetch",
        "not sent: the service could not be reached",
    ),
}


@pytest.mark.parametrize("case", REFUSED_WHOLE)
def test_a_refusal_every_image_would_get_ends_the_run_and_is_said_once(server, tmp_path, case):
    """After a refusal that cannot change from one image to the next (no key, a wrong key, a threshold refused,
    the service gone) the page sent every remaining image of the run, and each card said the same refusal. The
    first one is said once; the requests in flight are dropped and the images queued are not sent."""
    first, line, note = REFUSED_WHOLE[case]
    held: list = []
    files = [_png(tmp_path, f"{i}.png") for i in range(IMAGES)]
    with open_page(server, classify=lambda route: held.append(route)) as (page, errors):
        page.get_by_label("Choose images").set_input_files(files)
        _until(page, lambda: len(held) == 4, "sent")
        first(held[0])  # the other three are in flight when it comes, and never answered
        _until(page, lambda: page.inner_text("#status").startswith("0 of"), "refused")
        status, banner, cards = page.inner_text("#status"), page.inner_text("#error"), _cards(page)
        key_asked = page.locator("#key-field").is_visible()
    assert not errors, errors
    assert len(held) == 4, held  # none sent after the refusal
    assert banner == line, banner
    assert sum(card == note for card in cards) == IMAGES - 1 and note not in cards[0], cards
    assert status == f"0 of {IMAGES} images classified by tiny; 1 could not be; {IMAGES - 1} not sent.", status
    assert key_asked == (case in ("no key", "unknown key", "a gateway's own login"))


def test_a_model_the_service_no_longer_has_ends_the_run_on_the_real_refusal(server, tmp_path):
    """The model chosen is gone (the service was upgraded under an open page): the service refuses it for every
    image, and the page stopped sending at the first refusal rather than after all of them."""
    sent: list[str] = []

    def classify(route):
        sent.append(route.request.url)
        route.continue_()

    files = [_png(tmp_path, f"{i}.png") for i in range(IMAGES)]
    with open_page(server, classify=classify) as (page, errors):
        page.evaluate("document.getElementById('model').add(new Option('retired', 'retired'))")
        page.select_option("#model", "retired")
        page.get_by_label("Choose images").set_input_files(files)
        _until(page, lambda: page.inner_text("#status").startswith("0 of"), "refused")
        banner, cards = page.inner_text("#error"), _cards(page)
    assert not errors, errors
    assert len(sent) <= 4, sent
    assert "retired" in banner and banner.count("retired") == 1, banner
    assert sum(card.startswith("not sent: ") for card in cards) == IMAGES - 1, cards


def test_an_images_own_refusal_leaves_the_others_to_go_on_and_the_limit_is_in_mib(server, tmp_path):
    """A file that is no image and one over the body limit are refused alone: every other image is still sent
    and classified. The one over the limit is not sent at all (a service's early 413 can reach a browser as a
    reset connection, read as the service gone). The limit is said in MiB, the unit it was computed in (the page
    said "MB")."""
    files = [_png(tmp_path, f"{i}.png") for i in range(IMAGES - 2)]
    (tmp_path / "notes.png").write_bytes(b"not an image")
    (tmp_path / "huge.png").write_bytes(os.urandom(MAX_BODY + 1000))
    files[1:1] = [str(tmp_path / "notes.png")]
    files[3:3] = [str(tmp_path / "huge.png")]
    with open_page(server) as (page, errors):
        limits = page.inner_text("#limits-hint")
        page.get_by_label("Choose images").set_input_files(files)
        _until(page, lambda: page.inner_text("#status").startswith(f"{IMAGES - 2} of"), "classified")
        status, banner, cards = page.inner_text("#status"), page.inner_text("#error"), _cards(page)
    assert not errors, errors
    assert limits == "up to 0.572 MiB and 1 megapixels each", limits  # 600,000 bytes / 2**20
    assert status == f"{IMAGES - 2} of {IMAGES} images classified by tiny; 2 could not be.", status
    assert "not a readable image" in cards[1] and not banner, (cards, banner)
    assert cards[3].startswith("Not sent: ") and "over the service's limit of 0.572 MiB per image" in cards[3], cards


# ---------------------------------------------------------------------------------------------- a hung request
def _without_timeout(route) -> None:
    """/models as a service from before it listed its timeout answers it."""
    listed = route.fetch().json()
    del listed["limits"]["timeout_s"]
    route.fulfill(json=listed)


@pytest.mark.parametrize("listed", ["the service's", "none"])
def test_a_request_that_hangs_is_given_up_with_a_message_on_its_card(server, tmp_path, listed):
    """A request that never got an answer left its card at "classifying…" and the run unfinished for good. Each
    one now ends after the page's timeout, on its card only: the images queued behind it are still sent. The page
    waits past the service's own --timeout (GET /models says it), so that a live service's 504, which says why,
    comes first: with --timeout 120 it gave up at 90 s, before the service did."""
    margin_s = int(_app_constant(r"const TIMEOUT_MARGIN_S = (\d+);"))
    assert margin_s > 0
    assert httpx.get(f"{server}/models", timeout=10).json()["limits"]["timeout_s"] == TIMEOUT_S
    if listed == "none":  # a service from before it said: its default timeout, and the margin
        timeout_s = int(_app_constant(r"const DEFAULT_TIMEOUT_S = (\d+);"))
        assert timeout_s == ServiceSettings().timeout_s + margin_s
    else:
        timeout_s = TIMEOUT_S + margin_s
    held: list = []
    files = [_png(tmp_path, f"{i}.png") for i in range(5)]
    models = _without_timeout if listed == "none" else None
    with open_page(server, classify=lambda route: held.append(route), fake_clock=True, models=models) as (page, errors):
        page.get_by_label("Choose images").set_input_files(files)
        _until(page, lambda: len(held) == 4, "sent")
        page.clock.run_for((timeout_s - 1) * 1000)
        waiting = _cards(page)
        page.clock.run_for(2000)
        _until(page, lambda: len(held) == 5, "the fifth sent")
        page.clock.run_for((timeout_s + 1) * 1000)
        _until(page, lambda: page.inner_text("#status").startswith("0 of 5"), "given up")
        status, cards = page.inner_text("#status"), _cards(page)
    assert not errors, errors
    assert all(card == "classifying…" for card in waiting), waiting
    assert all(card.startswith(f"No answer within {timeout_s} s") for card in cards), cards
    assert status == "0 of 5 images classified by tiny; 5 could not be.", status


# ---------------------------------------------------------------------------------------------- caching
@pytest.mark.parametrize("path", ["/", "/static/app.js", "/static/style.css"])
def test_the_page_and_its_files_are_revalidated_so_an_upgrade_is_never_half_seen(server, path):
    """Nothing told browsers how long to keep the page's files: one could run a cached app.js, by its own guess
    at freshness, against an upgraded service. Each is kept but asked about again, a 304 when unchanged."""
    first = httpx.get(f"{server}{path}", timeout=10)
    assert first.status_code == 200 and first.headers["cache-control"] == "no-cache", first.headers
    if path.startswith("/static/"):
        again = httpx.get(f"{server}{path}", headers={"If-None-Match": first.headers["etag"]}, timeout=10)
        assert again.status_code == 304 and again.headers["cache-control"] == "no-cache", again.headers


# ---------------------------------------------------------------------------------------------- the API UI
def test_the_api_ui_missing_is_refused_in_the_contracts_shape(monkeypatch):
    """Where BentoML's API UI page is not found, /docs was answered {"error"} alone: a client reading every other
    refusal's reason had none to read here."""
    import asyncio

    from starlette.applications import Starlette

    from service.bentoml_compat import apis
    from service.page import page_routes

    monkeypatch.setattr(apis, "openapi_ui_page", lambda: None)

    async def get() -> httpx.Response:
        transport = httpx.ASGITransport(app=Starlette(routes=page_routes()))
        async with httpx.AsyncClient(transport=transport, base_url="http://page.test") as client:
            return await client.get("/docs")

    answer = asyncio.run(get())
    assert answer.status_code == REASONS["no_such_path"].status
    body = answer.json()
    assert body["reason"] == "no_such_path" and "/docs.json" in body["error"], body

"""The page at / as its users meet it: confidences said honestly near certainty, a rate limit in front of the
service waited out, a file that can no longer be read failing alone, and a visit that leaves no refusal in the
service's log. One real server for the module; the odd answers are Playwright routes in front of it.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from conftest import open_page, running_service
from test_service import _png, _until


class Server(str):
    log: Path


@pytest.fixture(scope="module")
def server(tiny_models_dir, tmp_path_factory) -> Iterator[Server]:
    log_path = tmp_path_factory.mktemp("server") / "server.log"
    env = {**os.environ, "BENTOML_HOME": str(tmp_path_factory.mktemp("bentoml_home")), "BENTOML_DO_NOT_TRACK": "true"}
    args = ["--threads", "1", "--decode-threads", "1"]
    with running_service(tiny_models_dir, log_path, *args, env=env) as base:
        url = Server(base)
        url.log = log_path
        yield url


def _cards(page) -> list[str]:
    return page.eval_on_selector_all(".answer", "answers => answers.map(a => a.innerText.replace(/\\n/g, ' '))")


def test_a_confidence_that_rounds_to_100_or_0_percent_is_shown_as_neither(server, tmp_path):
    """A top-1 of 99.6% was shown as "100%" and the 0.07% beside it as "0%": certainty the calibrated model does
    not claim (about 4 in 1,000 such answers are wrong). A threshold of 99.95% typed was said as "100%"."""
    labels = httpx.get(f"{server}/models", timeout=10).json()["models"][0]["classes"]
    answers = iter(
        [
            [0.99996, 0.00003, 0.00001],  # rounds to 100.0 and 0.0 at one decimal
            [0.9957, 0.0039, 0.0004],  # shown as "100%" and "0%" before
            [0.5, 0.3, 0.2],
        ]
    )

    def classify(route):
        top = [{"label": label, "index": i, "confidence": p} for i, (label, p) in enumerate(zip(labels, next(answers)))]
        route.fulfill(json={"model": "tiny", "predictions": [{"filename": "x.png", "top_k": top, "confident": True}]})

    files = [_png(tmp_path, f"{i}.png") for i in range(3)]
    with open_page(server, classify=classify) as (page, errors):
        page.get_by_label("Mark unsure below (%)").fill("99.95")
        page.get_by_label("Choose images").set_input_files(files)
        _until(page, lambda: page.inner_text("#status").startswith("3 of 3"), "classified")
        values = "cards => cards.map(c => [...c.querySelectorAll('.bar-label span:last-child')].map(s => s.innerText))"
        shown = page.eval_on_selector_all(".card", values)
        spoken = page.eval_on_selector_all(
            ".card", "cards => cards.map(c => [...c.querySelectorAll('[role=meter]')].map(m => m.ariaValueText))"
        )
        marks = page.eval_on_selector_all(".mark", "marks => marks.map(m => m.innerText)")
    assert not errors, errors
    # the page draws cards in the order picked, and its four requests may be answered in any order: compare as sets
    assert sorted(map(tuple, shown)) == sorted(
        [(">99.9%", "<0.1%", "<0.1%"), ("99.6%", "0.4%", "<0.1%"), ("50.0%", "30.0%", "20.0%")]
    ), shown
    assert spoken == shown, spoken  # a screen reader hears what is shown
    assert marks == ["confident (at least 99.95%)"] * 3, marks


def test_a_rate_limit_in_front_of_the_service_is_waited_out_not_an_error_on_each_card(server, tmp_path):
    """A gateway's rate limit (429 with Retry-After) was shown as "429 Too Many Requests" on every card it
    answered, where the service's own 503 is asked again after its Retry-After."""
    limited = {"left": 2}

    def classify(route):
        if limited["left"]:
            limited["left"] -= 1
            return route.fulfill(status=429, headers={"Retry-After": "1"}, json={"message": "rate limit exceeded"})
        return route.continue_()

    files = [_png(tmp_path, f"{i}.png") for i in range(2)]
    with open_page(server, classify=classify) as (page, errors):
        page.get_by_label("Choose images").set_input_files(files)
        _until(page, lambda: " of 2 " in page.inner_text("#status"), "finished")
        status, cards = page.inner_text("#status"), _cards(page)
    assert not errors, errors
    assert limited["left"] == 0
    assert status == "2 of 2 image(s) classified by tiny.", (status, cards)


def test_a_file_gone_since_it_was_picked_fails_alone_not_as_the_service_gone(server, tmp_path):
    """A picked file deleted or changed on disk before its turn (or a folder dropped with the images) fails its
    request as a dead network does: the page said "The service could not be reached" and sent none of the
    images after it."""
    held: list = []
    holding = [True]

    def classify(route):
        if holding[0]:
            return held.append(route)
        return route.continue_()

    files = [_png(tmp_path, f"{i}.png") for i in range(6)]
    with open_page(server, classify=classify) as (page, errors):
        page.get_by_label("Choose images").set_input_files(files)
        _until(page, lambda: len(held) == 4, "sent")
        Path(files[4]).unlink()  # queued behind the four in flight
        holding[0] = False
        for route in held:
            route.continue_()
        _until(page, lambda: " of 6 " in page.inner_text("#status"), "finished")
        status, banner, cards = page.inner_text("#status"), page.inner_text("#error"), _cards(page)
    assert not errors, errors
    assert status == "5 of 6 image(s) classified by tiny; 1 could not be.", (status, cards)
    assert not banner, banner
    assert cards[4].startswith("Could not read this file: it was moved or changed"), cards


def test_a_visit_to_the_page_leaves_no_refusal_in_the_log(server):
    """Every browser opening the page asked for /favicon.ico: a 404 logged as a refusal and counted under
    endpoint="(unmatched)" for each visitor, noise in what an operator reads for clients' mistakes."""
    start = len(server.log.read_text())
    with open_page(server) as (page, errors):
        page.wait_for_timeout(1500)  # the browser asks for an icon after the page has loaded
    log = server.log.read_text()[start:]
    assert not errors, errors
    assert "refused" not in log, log


def test_the_model_list_marks_the_services_default(server):
    """The list named the models alone: after changing model a person could not tell which one the service
    answers with when asked for none."""
    listed = httpx.get(f"{server}/models", timeout=10).json()["models"]
    default = next(model["name"] for model in listed if model["default"])
    with open_page(server) as (page, errors):
        page.select_option("#model", next(model["name"] for model in listed if not model["default"]))
        options = page.eval_on_selector_all("#model option", "options => options.map(o => [o.value, o.text])")
    assert not errors, errors
    assert options == [
        [model["name"], f"{model['name']} (default)" if model["name"] == default else model["name"]] for model in listed
    ], options


def test_a_wait_asked_by_retry_after_is_said_on_the_card_and_counted_down(server, tmp_path):
    """A 503 or 429 with a Retry-After of 30 s left its card saying "classifying…" for the 30 s."""
    refusals = [
        {"status": 503, "headers": {"Retry-After": "30"}, "json": {"error": "busy", "reason": "overloaded"}},
        {"status": 429, "headers": {"Retry-After": "5"}, "json": {"message": "rate limit exceeded"}},
    ]

    def classify(route):
        if refusals:
            return route.fulfill(**refusals.pop(0))
        return route.continue_()

    files = [_png(tmp_path, f"{i}.png") for i in range(2)]
    with open_page(server, classify=classify, fake_clock=True) as (page, errors):
        page.get_by_label("Choose images").set_input_files(files)
        _until(page, lambda: all("trying again" in card for card in _cards(page)), "told to wait")
        told = sorted(_cards(page))
        page.clock.run_for(10_000)
        _until(page, lambda: page.locator(".bars").count() == 1, "the 429's image sent again")
        later = _cards(page)
        page.clock.run_for(20_000)
        _until(page, lambda: " of 2 " in page.inner_text("#status"), "finished")
        status = page.inner_text("#status")
    assert not errors, errors
    assert told == ["service busy: trying again in 30 s", "too many requests: trying again in 5 s"], told
    assert "service busy: trying again in 20 s" in later, later
    assert status == "2 of 2 image(s) classified by tiny.", status


def test_a_retry_after_longer_than_the_page_waits_stops_the_run_at_once_and_says_so(server, tmp_path):
    """A gateway's 429 with a Retry-After of 3600 s kept the page at "classifying…" for up to three hours."""
    asked: list = []

    def classify(route):
        asked.append(route)
        route.fulfill(status=429, headers={"Retry-After": "3600"}, json={"message": "quota used"})

    files = [_png(tmp_path, f"{i}.png") for i in range(3)]
    with open_page(server, classify=classify) as (page, errors):
        page.get_by_label("Choose images").set_input_files(files)
        _until(page, lambda: " of 3 " in page.inner_text("#status"), "finished")
        status, banner, cards = page.inner_text("#status"), page.inner_text("#error"), _cards(page)
    assert not errors, errors
    assert len(asked) == 3, "each image asked once, none again"
    assert status == "0 of 3 image(s) classified by tiny; 1 could not be; 2 not sent.", (status, cards)
    assert banner.endswith(": the service asks to be asked again in 60 min. Pick the images again then."), banner
    assert cards.count("not sent: the service asks to be asked again in 60 min") == 2, cards

"""The page at / as its users meet it: confidences said honestly near certainty, a rate limit in front of the
service waited out, a file that can no longer be read failing alone, a dropped folder read for its images, and a
visit that leaves no refusal in the service's log. One real server for the module; the odd answers are Playwright
routes in front of it.
"""

from __future__ import annotations

import base64
import os
import re
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
    assert status == "2 of 2 images classified by tiny.", (status, cards)


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
    assert status == "5 of 6 images classified by tiny; 1 could not be.", (status, cards)
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
    assert status == "2 of 2 images classified by tiny.", status


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
    assert status == "0 of 3 images classified by tiny; 1 could not be; 2 not sent.", (status, cards)
    assert banner.endswith(": the service asks to be asked again in 60 min. Pick the images again then."), banner
    assert cards.count("not sent: the service asks to be asked again in 60 min") == 2, cards


# ---------------------------------------------------------------------------------------------- a dropped folder
APP_JS = Path(__file__).resolve().parents[1] / "service" / "static" / "app.js"

# A drop as Chromium hands one to the page, which a script cannot make: each dropped thing a DataTransferItem whose
# webkitGetAsEntry() is a FileSystemEntry, a folder's entries read in batches (of 2 here, to need several calls)
# and each answer called back later, as the browser's are. `files` holds what Chromium puts there for a folder: an
# empty File of its name. A tree is {name: null (a PNG), "type/x" (a file of that type), {...} (a folder),
# "unreadable" (a folder whose reading fails)}. window.opened lists the folders whose entries were asked for.
FAKE_DROP = """
window.opened = [];
window.fakeItems = (png, tree) => {
  const bytes = Uint8Array.from(atob(png), (c) => c.charCodeAt(0));
  const later = (call) => setTimeout(call, 0);
  const entry = (name, value, parent) => {
    const fullPath = `${parent}/${name}`;
    if (value === null || (typeof value === "string" && value !== "unreadable")) {
      const file = value === null ? new File([bytes], name, {type: "image/png"}) : new File(["x"], name, {type: value});
      return {name, fullPath, isFile: true, isDirectory: false, file: (ok) => later(() => ok(file)), plain: file};
    }
    const children = value === "unreadable" ? [] : Object.entries(value).map(([n, v]) => entry(n, v, fullPath));
    const createReader = () => {
      let at = 0;
      return {readEntries: (ok, fail) => later(() => {
        if (at === 0) window.opened.push(fullPath);
        if (value === "unreadable") return fail(new DOMException("not allowed", "NotReadableError"));
        const batch = children.slice(at, at + 2);
        at += batch.length;
        ok(batch);
      })};
    };
    return {name, fullPath, isFile: false, isDirectory: true, createReader, plain: new File([], name)};
  };
  return Object.entries(tree).map(([name, value]) => entry(name, value, ""));
};
window.fakeDrop = (png, tree) => {
  const entries = window.fakeItems(png, tree);
  const items = entries.map((e) => ({kind: "file", webkitGetAsEntry: () => e, getAsFile: () => e.plain}));
  const event = new Event("drop", {bubbles: true, cancelable: true});
  Object.defineProperty(event, "dataTransfer", {value: {items, files: entries.map((e) => e.plain), types: ["Files"]}});
  document.getElementById("drop").dispatchEvent(event);
};
"""


def _png_base64(tmp_path: Path) -> str:
    return base64.b64encode(Path(_png(tmp_path, "drop.png")).read_bytes()).decode()


def _titles(page) -> list[str]:
    return page.eval_on_selector_all(".card h2", "titles => titles.map(t => t.innerText)")


def test_a_dropped_folder_is_read_for_its_images_hidden_ones_left_out(server, tmp_path):
    """A dropped folder was sent as one file, which failed: "Could not read this file ... or it is a folder". Its
    images, in its subfolders too, are classified now, each card named by its place in the folder (cats/1.png and
    dogs/1.png are not both "1.png"); a file that is no image is left out and said so; hidden files and folders are
    left out unsaid, as the batch scorer leaves them. A file dropped beside the folder comes with it."""
    tree = {
        "photos": {
            "b.png": None,
            "notes.txt": "text/plain",
            "a.png": None,
            ".DS_Store": "",  # untyped: sent as an image were it not hidden
            ".thumbnails": {"t.png": None},
            "dogs": {"1.png": None},
            "cats": {"1.png": None, "deeper": {"2.png": None}},
        },
        "z.png": None,
    }
    with open_page(server, init_script=FAKE_DROP) as (page, errors):
        page.evaluate("([png, tree]) => window.fakeDrop(png, tree)", [_png_base64(tmp_path), tree])
        _until(page, lambda: " of 6 " in page.inner_text("#status"), "finished")
        status, banner, titles = page.inner_text("#status"), page.inner_text("#error"), _titles(page)
        opened = page.evaluate("window.opened")
    assert not errors, errors
    assert titles == ["photos/a.png", "photos/b.png", "photos/cats/1.png", "photos/cats/deeper/2.png",
                      "photos/dogs/1.png", "z.png"], titles  # fmt: skip
    assert status == "6 of 6 images classified by tiny.", status
    assert banner == "1 dropped file left out: not an image.", banner
    assert "/photos/.thumbnails" not in opened, opened


def test_a_dropped_folder_is_read_only_up_to_the_limit_and_a_failing_one_is_said(server, tmp_path):
    """The folder walk on its own: it asks for a folder's entries until the answer is empty (Chromium answers 100
    at a time), stops reading once it holds `limit` images (a drop of a home folder would otherwise be read
    whole), and counts a folder it cannot read rather than fail the drop."""
    tree = {"big": {f"f{i}": {f"{j}.png": None for j in range(5)} for i in range(4)}, "locked": "unreadable"}
    with open_page(server, init_script=FAKE_DROP) as (page, errors):
        walk = """async ([png, tree, limit]) => {
            const items = window.fakeItems(png, tree).map((e) => e.isDirectory ? {directory: e} : {file: e.plain});
            const found = await imagesDropped(items, limit);
            return {...found, images: found.images.map((image) => image.path)};
        }"""
        found = page.evaluate(walk, [_png_base64(tmp_path), tree, 7])
        opened = page.evaluate("window.opened")
        whole = page.evaluate(walk, [_png_base64(tmp_path), tree, 100])
    assert not errors, errors
    assert found["images"] == [f"big/f{i}/{j}.png" for i in range(2) for j in range(5)][:7], found
    assert found["more"] and found["unreadable"] == 0, found
    assert opened == ["/big", "/big/f0", "/big/f1"], opened  # f2, f3 and locked never read
    assert len(whole["images"]) == 20 and not whole["more"], whole  # every batch of every folder read
    assert whole["unreadable"] == 1 and whole["notImages"] == 0, whole


@pytest.mark.parametrize("how", ["chosen", "a dropped folder"])
def test_more_images_than_the_page_takes_are_cut_at_its_limit_and_said(server, tmp_path, how):
    """One pick or drop is bounded (a card and a request each; the batch scorer is the tool for a data set): the
    images past the limit are not sent, and the page says so and what to use instead."""
    found = re.search(r"const MAX_IMAGES = (\d+);", APP_JS.read_text(encoding="utf-8"))
    assert found, "app.js names no MAX_IMAGES"
    limit = int(found.group(1))
    held: list = []
    with open_page(server, init_script=FAKE_DROP, classify=lambda route: held.append(route)) as (page, errors):
        if how == "chosen":
            one = Path(_png(tmp_path, "one.png")).read_bytes()
            files = [{"name": f"{i:04}.png", "mimeType": "image/png", "buffer": one} for i in range(limit + 2)]
            page.get_by_label("Choose images").set_input_files(files)
        else:
            tree = {"all": {f"{i:04}.png": None for i in range(limit + 2)}}
            page.evaluate("([png, tree]) => window.fakeDrop(png, tree)", [_png_base64(tmp_path), tree])
        _until(page, lambda: len(held) == 4, "sent", seconds=60)
        cards, banner, status = page.locator(".card").count(), page.inner_text("#error"), page.inner_text("#status")
    assert not errors, errors
    assert cards == limit, cards
    assert status == f"Classifying {limit} images…", status
    assert banner.startswith(f"Only the first {limit} images are classified") and "service score" in banner, banner


def test_one_image_is_said_as_one_image(server, tmp_path):
    """The status said "1 of 1 image(s) classified"."""
    with open_page(server) as (page, errors):
        page.get_by_label("Choose images").set_input_files(_png(tmp_path))
        _until(page, lambda: " of 1 " in page.inner_text("#status"), "finished")
        status = page.inner_text("#status")
    assert not errors, errors
    assert status == "1 of 1 image classified by tiny.", status

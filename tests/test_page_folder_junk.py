"""The page at / given a dropped folder with what an operating system leaves in folders (Thumbs.db, desktop.ini,
.DS_Store and other hidden files, a Mac zip's __MACOSX/): left out before sending, without a word, as training's
folder reader and the batch scorer leave them, where each was sent and refused on a card of its own. The drop is
faked as Chromium hands one to the page (test_page_user_edges.FAKE_DROP); one real server for the module.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import open_page, running_service
from test_page_user_edges import APP_JS, FAKE_DROP, _png_base64, _titles
from test_service import _until

# Untyped, as a browser hands them over: the page sends an untyped file, for the service to judge by its bytes.
SYSTEM = ""


@pytest.fixture(scope="module")
def server(tiny_models_dir, tmp_path_factory) -> Iterator[str]:
    log_path = tmp_path_factory.mktemp("server") / "server.log"
    env = {**os.environ, "BENTOML_HOME": str(tmp_path_factory.mktemp("bentoml_home")), "BENTOML_DO_NOT_TRACK": "true"}
    with running_service(tiny_models_dir, log_path, "--threads", "1", "--decode-threads", "1", env=env) as base:
        yield base


def _drop(page, tmp_path: Path, tree: dict) -> None:
    page.evaluate("([png, tree]) => window.fakeDrop(png, tree)", [_png_base64(tmp_path), tree])


def test_a_dropped_folders_system_files_are_left_out(server, tmp_path):
    """Thumbs.db and desktop.ini (untyped) were sent, each refused on its own card, and __MACOSX/ was read as the
    user's. They are left out now, as the hidden ones were, and the status counts the images sent."""
    tree = {
        "photos": {
            "a.png": None,
            "Thumbs.db": SYSTEM,
            "desktop.ini": SYSTEM,
            ".DS_Store": SYSTEM,
            "__MACOSX": {"photos": {"._a.png": SYSTEM, "b.png": None}},
            "cats": {"b.png": None, "THUMBS.DB": SYSTEM},
        }
    }
    held: list = []
    with open_page(server, init_script=FAKE_DROP, classify=lambda route: held.append(route)) as (page, errors):
        _drop(page, tmp_path, tree)
        _until(page, lambda: len(held) == 2, "sent")
        classifying, titles = page.inner_text("#status"), _titles(page)
        for route in held:
            route.continue_()
        _until(page, lambda: " of " in page.inner_text("#status"), "finished")
        status, banner = page.inner_text("#status"), page.inner_text("#error")
        opened = page.evaluate("window.opened")
    assert not errors, errors
    assert titles == ["photos/a.png", "photos/cats/b.png"], titles
    assert classifying == "Classifying 2 images…", classifying
    assert status == "2 of 2 images classified by tiny.", status
    assert not banner, banner
    assert "/photos/__MACOSX" not in opened, opened


def test_a_file_dropped_by_its_own_name_is_sent_as_it_is(server, tmp_path):
    """Only what a dropped folder holds is judged by its name: a Thumbs.db dropped on its own was chosen, and is
    sent (the service says what it is)."""
    with open_page(server, init_script=FAKE_DROP) as (page, errors):
        _drop(page, tmp_path, {"photos": {"a.png": None, "Thumbs.db": SYSTEM}})
        _until(page, lambda: page.inner_text("#status") == "1 of 1 image classified by tiny.", "the folder classified")
        _drop(page, tmp_path, {"Thumbs.db": SYSTEM, "b.png": None})
        _until(page, lambda: " of 2 " in page.inner_text("#status"), "finished")
        status, titles = page.inner_text("#status"), _titles(page)
    assert not errors, errors
    assert titles == ["Thumbs.db", "b.png"], titles
    assert status == "1 of 2 images classified by tiny; 1 could not be.", status


def test_a_dropped_folder_of_only_system_files_says_so(server, tmp_path):
    """A folder holding only the system's files sent them, each refused; now nothing is sent and the page says
    that it holds no image."""
    sent: list = []
    tree = {"empty": {"Thumbs.db": SYSTEM, "desktop.ini": SYSTEM, ".DS_Store": SYSTEM, "__MACOSX": {}}}
    with open_page(server, init_script=FAKE_DROP, classify=lambda route: sent.append(route)) as (page, errors):
        _drop(page, tmp_path, tree)
        _until(page, lambda: page.inner_text("#error"), "said")
        banner, cards = page.inner_text("#error"), page.locator(".card").count()
    assert not errors, errors
    assert banner == "None of the dropped files is an image.", banner
    assert cards == 0 and not sent, (cards, sent)


def test_system_files_do_not_count_against_the_pages_image_limit(server, tmp_path):
    """The page takes a bounded number of images a drop: system files named before the images (".DS_Store",
    "Thumbs.db", "__MACOSX", "desktop.ini" sort before "p0000.png") took places in it, pushed real images past
    it and made the page say it had cut the drop."""
    found = re.search(r"const MAX_IMAGES = (\d+);", APP_JS.read_text(encoding="utf-8"))
    assert found, "app.js names no MAX_IMAGES"
    limit = int(found.group(1))
    junk = {".DS_Store": SYSTEM, "Thumbs.db": SYSTEM, "__MACOSX": {"._p0000.png": SYSTEM}, "desktop.ini": SYSTEM}
    tree = {"all": {**junk, **{f"p{i:04}.png": None for i in range(limit)}}}
    held: list = []
    with open_page(server, init_script=FAKE_DROP, classify=lambda route: held.append(route)) as (page, errors):
        _drop(page, tmp_path, tree)
        _until(page, lambda: len(held) == 4, "sent", seconds=60)
        titles, banner, status = _titles(page), page.inner_text("#error"), page.inner_text("#status")
    assert not errors, errors
    assert titles == [f"all/p{i:04}.png" for i in range(limit)], titles[:5]
    assert status == f"Classifying {limit} images…", status
    assert not banner, banner

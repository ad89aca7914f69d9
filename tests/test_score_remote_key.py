"""`python -m service score DIR --url URL` against a service that asks for API keys, given no key or one it does
not know: refused in one line before the output is created or touched, exit status 2 as for other usage errors;
and the same run with a key it knows, or against a service that asks for none, scores as before, at the cost of
one request of one small test image."""

from __future__ import annotations

import os
import re
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Iterator

import pytest

from conftest import running_service
from fakes import FakeService, base_url, serving
from service.score.cli import main as score_main
from service.score.remote import KEY_CHECK_NAME

KEY_VARIABLE = "CIFAR_API_KEY"


@pytest.fixture(scope="module")
def keyed(tiny_models_dir, tmp_path_factory):
    env = {
        **os.environ,
        "BENTOML_HOME": str(tmp_path_factory.mktemp("bentoml_home")),
        "BENTOML_DO_NOT_TRACK": "true",
        "CIFAR_API_KEYS": "right-key",
    }
    log = tmp_path_factory.mktemp("server") / "server.log"
    with running_service(tiny_models_dir, log, "--threads", "1", env=env) as url:
        yield url


@pytest.fixture
def photos(image_folder, tmp_path) -> Path:
    root = tmp_path / "photos"
    root.mkdir()
    for source in sorted((image_folder / "alpha").iterdir())[:3]:
        (root / source.name).write_bytes(source.read_bytes())
    return root


def _score(photos: Path, url: str, out: Path, *more: str) -> int:
    return score_main([str(photos), "--url", url, "--out", str(out), "--no-progress", *more])


def test_no_key_for_a_service_that_wants_one_is_one_line_before_the_output(
    keyed, photos, tmp_path, monkeypatch, capsys
):
    monkeypatch.delenv(KEY_VARIABLE, raising=False)
    out = tmp_path / "preds.csv"
    assert _score(photos, keyed, out) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: "), err
    assert f"the service at {keyed} requires an API key and none was given" in err, err
    assert f"--api-key KEY, or the {KEY_VARIABLE} variable" in err, err
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["photos"]


def test_a_key_the_service_does_not_accept_leaves_a_resumed_output_untouched(
    keyed, photos, tmp_path, monkeypatch, capsys
):
    monkeypatch.setenv(KEY_VARIABLE, "right-key")
    out = tmp_path / "preds.csv"
    assert _score(photos, keyed, out) == 0
    capsys.readouterr()
    before, stamp = out.read_bytes(), os.stat(out).st_mtime_ns
    monkeypatch.setenv(KEY_VARIABLE, "wrong-key")
    (photos / "new.png").write_bytes(next(photos.iterdir()).read_bytes())
    assert _score(photos, keyed, out, "--resume") == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "wrong-key" not in err, err
    assert f"the service at {keyed} does not accept the API key given (--api-key, or the {KEY_VARIABLE}" in err, err
    assert out.read_bytes() == before and os.stat(out).st_mtime_ns == stamp
    assert _score(photos, keyed, out, "--resume", "--api-key", "right-key") == 0
    assert "scored 1" in capsys.readouterr().err


class Fake(FakeService):
    """GET /readyz and /models (a model of two classes); POST /classify answered ``server.check`` (status, body)
    where it is the scorer's key check and that is set, else classified; the names of every POST's images in
    ``server.posts``, its k in ``server.ks``."""

    classes = ["alpha", "beta"]

    def do_POST(self) -> None:
        body, names = self.read_images()
        self.server.posts.append(names)  # type: ignore[attr-defined]
        self.server.ks.append(re.findall(rb'name="k"\r\n\r\n([^\r]*)\r\n', body))  # type: ignore[attr-defined]
        check = self.server.check  # type: ignore[attr-defined]
        if names == [KEY_CHECK_NAME] and check is not None:
            if check == "hang":
                self.server.release.wait(10)  # type: ignore[attr-defined]
                return
            self.answer(*check)
            return
        self.classify(names)


@pytest.fixture
def fake() -> Iterator[ThreadingHTTPServer]:
    with serving(Fake, posts=[], ks=[], check=None) as server:
        yield server


def test_a_service_without_keys_costs_one_request_of_one_test_image(fake, photos, tmp_path, monkeypatch):
    monkeypatch.delenv(KEY_VARIABLE, raising=False)
    out = tmp_path / "preds.csv"
    assert _score(photos, base_url(fake), out) == 0
    assert fake.posts == [[KEY_CHECK_NAME], sorted(p.name for p in photos.iterdir())], fake.posts
    # k=1 for the check: the default k (5) is more than this model's 2 classes, a refusal the service would count
    assert fake.ks == [[b"1"], [b"2"]], fake.ks
    assert len(out.read_text().splitlines()) == 4


@pytest.mark.parametrize(
    "check", [(500, {"error": "the model raised"}), (404, {"error": "no such path"}), "hang"], ids=str
)
def test_a_key_check_that_fails_otherwise_leaves_the_run_to_find_out(fake, photos, tmp_path, monkeypatch, check):
    """Only a 401 or 403 is the key's: a service failing the test image, or slow to answer it, is the run's to
    handle, as it was before the check."""
    monkeypatch.delenv(KEY_VARIABLE, raising=False)
    fake.check = check
    out = tmp_path / "preds.csv"
    assert _score(photos, base_url(fake), out, "--timeout", "0.5") == 0
    assert len(out.read_text().splitlines()) == 4


def test_a_401_to_a_key_given_says_the_services_words(fake, photos, tmp_path, monkeypatch, capsys):
    """A key sent and answered as if none were (a proxy that drops the header): what the service said is shown."""
    monkeypatch.setenv(KEY_VARIABLE, "some-key")
    fake.check = (401, {"error": "Authorization header missing", "reason": "unauthorized"})
    out = tmp_path / "preds.csv"
    assert _score(photos, base_url(fake), out) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "some-key" not in err, err
    assert "does not accept the API key given" in err and "HTTP 401: Authorization header missing" in err, err
    assert not out.exists()

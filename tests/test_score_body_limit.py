"""A file exactly at the body limit GET /models lists is not uploaded (its request, with the
form's own bytes, can only be over it); and a one-image request refused for another reason than its size (too many
images) is not said to be a file too large for the service."""

from __future__ import annotations

from PIL import Image

from conftest import mock_service
from test_score import _classify_handler, _csv_rows, _rgb, _score


def test_a_file_exactly_at_the_listed_limit_is_not_uploaded(tmp_path, monkeypatch):
    folder = tmp_path / "images"
    folder.mkdir()
    Image.fromarray(_rgb(16, 16, 1)).save(folder / "small.png")
    Image.fromarray(_rgb(128, 128, 2)).save(folder / "big.png")
    big = (folder / "big.png").stat().st_size
    handler, calls = _classify_handler(max_images=3, max_body=big, says_limits=True)
    mock_service(monkeypatch, handler)
    out = tmp_path / "out.csv"
    assert _score(folder, "--url", "http://scorer.test", "--out", out, "--no-progress") == 0
    rows = {r["path"]: r for r in _csv_rows(out)}
    assert rows["small.png"]["error"] == "", rows
    assert rows["big.png"]["error"] == (
        f"file is {big} bytes, too large for the service: its requests are limited to {big} bytes"
    ), rows
    assert calls["too_large"] == 0, calls


def test_a_one_image_request_refused_as_too_many_images_is_not_said_too_large(tmp_path, monkeypatch):
    folder = tmp_path / "images"
    folder.mkdir()
    Image.fromarray(_rgb(16, 16, 1)).save(folder / "a.png")
    handler, _ = _classify_handler(max_images=0)
    mock_service(monkeypatch, handler)
    out = tmp_path / "out.csv"
    assert _score(folder, "--url", "http://scorer.test", "--out", out, "--no-progress") == 0
    error = _csv_rows(out)[0]["error"]
    assert error == "too many images: at most 0", error

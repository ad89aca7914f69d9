"""The listing of a folder dataset, made on every read (a cached one too): one stat of each image's file, not one
per question asked of it (is it a file, does it exist, is it a link), which on a tree of 100,000 photos on a network
disk is what a read of the cache costs."""

from __future__ import annotations

import importlib
import os
from pathlib import Path

import pytest

folder = importlib.import_module("training.data.folder_tree")


def test_a_tree_of_regular_images_is_listed_without_asking_each_whether_it_exists_or_is_a_link(tmp_path, monkeypatch):
    for cls in ("cat", "dog"):
        (tmp_path / cls).mkdir()
        for i in range(5):
            (tmp_path / cls / f"{i}.png").write_bytes(b"png")
    asked: list[str] = []
    exists, is_symlink = Path.exists, Path.is_symlink

    def counted_exists(self: Path) -> bool:
        asked.append(f"exists {self.name}")
        return exists(self)

    def counted_is_symlink(self: Path) -> bool:
        asked.append(f"is_symlink {self.name}")
        return is_symlink(self)

    monkeypatch.setattr(Path, "exists", counted_exists)
    monkeypatch.setattr(Path, "is_symlink", counted_is_symlink)
    images, others, _ = folder._tree_images(tmp_path)
    assert len(images) == 10 and not others
    assert [q for q in asked if q.endswith(".png")] == []


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no named pipes here")
def test_a_pipe_and_a_broken_link_by_an_images_name_are_still_told_apart(tmp_path):
    (tmp_path / "cat").mkdir()
    (tmp_path / "cat" / "1.png").write_bytes(b"png")
    os.mkfifo(tmp_path / "cat" / "2.png")
    images, others, _ = folder._tree_images(tmp_path)
    assert [p.name for p in images] == ["1.png"] and [p.name for p in others] == ["2.png"]
    os.symlink(tmp_path / "gone.png", tmp_path / "cat" / "3.png")
    with pytest.raises(folder.DatasetError, match="3.png"):
        folder._tree_images(tmp_path)

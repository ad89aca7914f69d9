"""Training's folder reader (``--data DIR``) and the batch scorer's walk (``service score DIR``) on folders as a user
walk found them: a link to a class folder sorting before it, a link back up the tree, a second name of a class
folder, links packed in an archive, a pipe with an image's name, images only in a hidden
folder, an archive with an empty class folder, and class names differing only in case under ``evaluate``."""

from __future__ import annotations

import importlib
import logging
import os
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from service.score.summary import Summary
from service.score.walk import WalkStats, walk
from training.data import DatasetError
from training.data.folder import read_image_folder

folder_module = importlib.import_module("training.data.folder")  # training.data.folder is also a function's name
folder_tree = importlib.import_module("training.data.folder_tree")
folder_layout = importlib.import_module("training.data.folder_layout")
needs_symlinks = pytest.mark.skipif(not hasattr(os, "symlink") or os.name == "nt", reason="needs os.symlink")
needs_fifos = pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs os.mkfifo")


def _tree(root: Path, classes: dict[str, int]) -> Path:
    rng = np.random.default_rng(len(classes))
    for cls, count in classes.items():
        (root / cls).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            Image.fromarray(rng.integers(0, 256, (12, 10, 3), dtype=np.uint8)).save(root / cls / f"{i}.png")
    return root


def _walked(root: Path) -> tuple[list[str], WalkStats, str]:
    """The scorer's entries under ``root`` (each without an error), its walk's record, and its summary's text."""
    stats = WalkStats()
    entries = list(walk(root, stats))
    assert [e.error for e in entries] == [None] * len(entries)
    return [e.rel for e in entries], stats, Summary(walk=stats).text("out.csv")


@needs_symlinks
def test_a_link_sorting_before_its_class_folder_is_skipped_and_the_folder_keeps_its_name(tmp_path, caplog):
    """links/Kitty -> cat ('K' sorts before 'c'): the real folder is read, by its own name, in both; the link is
    the one left out, said as a second name of a folder read, not as a loop."""
    root = _tree(tmp_path / "links", {"cat": 2, "dog": 1})
    (root / "Kitty").symlink_to("cat", target_is_directory=True)

    rels, stats, summary = _walked(root)
    with caplog.at_level(logging.WARNING, logger="training.data.folder"):
        data = read_image_folder(root)

    assert rels == ["cat/0.png", "cat/1.png", "dog/0.png"]
    assert stats.linked_dirs_skipped == ["Kitty"]
    assert "not entered Kitty/: a link to the folder scored as cat/\n" in summary + "\n", summary
    assert "symlink loop" not in summary
    assert data.classes == ["cat", "dog"] and len(data) == 3
    assert (
        "folder left out, not classes, the same folder as a class already read: Kitty is a link to cat, read by its "
        "own name" in caplog.text
    ), caplog.text
    assert "read as Kitty" not in caplog.text


@needs_symlinks
def test_only_a_real_loop_is_said_to_be_one_and_a_second_link_names_the_first(tmp_path, caplog):
    """cat/up -> the root, and a link to the folder holding the root: loops, neither entered by either reader.
    Two links to one folder outside the tree: the first (sorted) is read, the second named as its second name."""
    root = _tree(tmp_path / "a" / "tree", {"cat": 1})
    _tree(tmp_path / "a", {"x": 1})  # under a/: read through the link to it, were that entered
    _tree(tmp_path / "elsewhere", {"y": 1})
    (root / "cat" / "up").symlink_to(root, target_is_directory=True)
    (root / "around").symlink_to(tmp_path / "a", target_is_directory=True)
    (root / "bird").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    (root / "bird2").symlink_to(tmp_path / "elsewhere", target_is_directory=True)

    rels, stats, summary = _walked(root)
    with caplog.at_level(logging.WARNING, logger="training.data.folder"):
        images, _, _ = folder_tree._tree_images(root)

    assert rels == ["bird/y/0.png", "cat/0.png"]
    assert [p.relative_to(root).as_posix() for p in images] == rels
    assert stats.linked_dirs_skipped == ["around", "bird2", "cat/up"]
    assert "not entered around/: a link to a folder it is in (a symlink loop)" in summary, summary
    assert "not entered cat/up/: a link to a folder it is in (a symlink loop)" in summary, summary
    assert "not entered bird2/: a link to the folder scored as bird/\n" in summary + "\n", summary


@needs_symlinks
def test_the_scorer_and_the_reader_agree_on_a_link_to_a_hidden_folder_and_on_links_either_side(tmp_path):
    """A link to a hidden folder is the only way into it: followed, by both. Links sorting before and after a
    class folder: neither read, by both."""
    root = _tree(tmp_path / "pets", {"cat": 1, "dog": 1, ".cats": 1})
    (root / "Animals").symlink_to("dog", target_is_directory=True)
    (root / "kitten").symlink_to(".cats", target_is_directory=True)
    (root / "zebra").symlink_to("cat", target_is_directory=True)

    rels, _, _ = _walked(root)
    data = read_image_folder(root)
    images, _, _ = folder_tree._tree_images(root)

    assert rels == ["cat/0.png", "dog/0.png", "kitten/0.png"]
    assert [p.relative_to(root).as_posix() for p in images] == rels
    assert data.classes == ["cat", "dog", "kitten"]


@needs_symlinks
def test_a_link_back_up_beside_the_class_folders_is_said_as_a_loop_not_as_a_folder_without_images(tmp_path, caplog):
    """train/loop -> .. : left out by both readers, and said as the loop it is."""
    root = _tree(tmp_path / "train", {"cat": 1, "dog": 1})
    (root / "loop").symlink_to("..", target_is_directory=True)

    rels, stats, _ = _walked(root)
    with caplog.at_level(logging.WARNING, logger="training.data.folder"):
        data = read_image_folder(root)

    assert rels == ["cat/0.png", "dog/0.png"] and stats.linked_dirs_walked_as == {"loop": None}
    assert data.classes == ["cat", "dog"]
    assert f"{root}: link back up the tree left out, not followed (a symlink loop): loop" in caplog.text, caplog.text
    assert "without images" not in caplog.text


def test_a_second_name_of_a_class_folder_that_is_no_link_is_read_once_as_by_the_scorer(tmp_path, caplog, monkeypatch):
    """A bind mount of a class folder beside it: one folder by (device, inode), the scorer's identity, though its
    resolved paths differ. Mounting needs root: the file system's answer for the second name is made here."""
    root = _tree(tmp_path / "pets", {"cat": 2, "dog": 1})
    mount = _tree(tmp_path / "pets", {"copy": 2}) / "copy"  # what a bind mount of cat/ would list
    stat = os.stat

    def bind_mounted(path, *args, **kwargs):
        same = isinstance(path, (str, os.PathLike)) and os.fspath(path) == str(mount)
        return stat(root / "cat" if same else path, *args, **kwargs)

    monkeypatch.setattr(os, "stat", bind_mounted)
    rels, stats, _ = _walked(root)
    with caplog.at_level(logging.WARNING, logger="training.data.folder"):
        data = read_image_folder(root)

    assert rels == ["cat/0.png", "cat/1.png", "dog/0.png"] and stats.linked_dirs_walked_as == {"copy": "cat"}
    assert data.classes == ["cat", "dog"] and len(data) == 3
    assert "the same folder as a class already read: copy is the folder read as cat" in caplog.text, caplog.text


@needs_symlinks
def test_a_link_to_a_folder_in_an_archive_is_said_not_followed_once(tmp_path, caplog):
    """Packed without tar -h, a link to a class folder (and one to a folder outside) is a link in the archive, which
    the reader does not follow: said, naming each, once. A link to a file it holds is read as that file."""
    tree = _tree(tmp_path / "pets", {"cat": 2, "dog": 1})
    _tree(tmp_path / "elsewhere", {"bird": 1})
    (tree / "kitty").symlink_to("cat", target_is_directory=True)
    (tree / "bird").symlink_to(tmp_path / "elsewhere" / "bird", target_is_directory=True)
    (tree / "dog" / "1.png").symlink_to("0.png")
    archive = _pack(tree, tmp_path / "pets.tar.gz")
    said = "pets.tar.gz: 2 links left out, not followed: links inside an archive are not (pack it with tar -h"

    with caplog.at_level(logging.WARNING, logger="training.data.folder"):
        data = read_image_folder(archive)
        read_image_folder(archive)

    assert data.classes == ["cat", "dog"] and len(data) == 4
    assert caplog.text.count(said) == 1, caplog.text
    assert "which stores what links point to): pets/bird, pets/kitty\n" in caplog.text, caplog.text


@needs_fifos
def test_a_pipe_with_an_image_name_is_left_out_with_a_warning_never_opened(tmp_path, caplog):
    """The scorer fails it as 'not a regular file'; the reader said nothing. Opening it would block: the read
    below returning at all shows it was not."""
    root = _tree(tmp_path / "pets", {"cat": 2, "dog": 1})
    os.mkfifo(root / "cat" / "pipe.jpg")

    with caplog.at_level(logging.WARNING, logger="training.data.folder"):
        data = read_image_folder(root)

    assert len(data) == 3
    assert (
        "1 file left out, not a regular file (a pipe, a device or a socket; never opened): cat/pipe.jpg" in caplog.text
    ), caplog.text
    assert "not images by their extension" not in caplog.text


def test_a_folder_whose_images_are_all_in_a_hidden_folder_names_it_in_the_refusal(tmp_path):
    root = _tree(tmp_path / "onlyhidden" / ".x", {"cat": 1}).parent

    with pytest.raises(DatasetError) as refused:
        read_image_folder(root)

    text = str(refused.value)
    assert "holds no images in class folders" in text
    assert text.endswith("; hidden folder not read (a name starting with a dot): .x"), text


def test_a_class_folder_of_images_with_hidden_folders_beside_it_names_them_too(tmp_path):
    root = _tree(tmp_path / "cat", {".thumbnails": 1, ".cache": 1}).parent / "cat"
    Image.new("RGB", (8, 8)).save(root / "0.png")

    with pytest.raises(DatasetError, match=r"only 1 image directly in it.*; hidden folders not read .*: .cache, "):
        read_image_folder(root)


def _pack(tree: Path, archive: Path) -> Path:
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(tree, arcname=tree.name)
    return archive


@pytest.mark.parametrize("inside", [False, True], ids=["packed-by-name", "packed-from-inside"])
def test_an_empty_class_folder_in_an_archive_is_said_as_in_a_folder_and_again_from_its_cache(tmp_path, caplog, inside):
    tree = _tree(tmp_path / "pets", {"cat": 2, "dog": 1})
    (tree / "fish").mkdir()
    (tree / "bird").mkdir()
    (tree / "bird" / "notes.txt").write_text("no image")
    archive = tmp_path / "pets.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(tree, arcname="." if inside else "pets")
    cache = tmp_path / "cache"
    where = "" if inside else "pets/"

    for _ in range(2):  # a decode, then a read of its cache
        folder_layout._said_left_out.clear()
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="training.data.folder"):
            data = read_image_folder(archive, cache_dir=cache)
        assert data.classes == ["cat", "dog"]
        assert f"pets.tar.gz: folders without images left out, not classes: {where}bird, {where}fish" in caplog.text
    assert list(cache.glob("*.npz"))  # the second read was the cache's

    folder_layout._said_left_out.clear()
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="training.data.folder"):
        read_image_folder(tree)
    assert "folders without images left out, not classes: bird, fish" in caplog.text


def test_an_archives_warnings_come_after_its_progress_bar_is_closed(tmp_path, caplog, monkeypatch):
    """Said while the bar was open, they landed on its line ('decoding ok.tar.gz: 216img [...]WARNING ...')."""
    tree = _tree(tmp_path / "ok", {"cat": 2, "dog": 1, ".x": 1})
    (tree / "cat" / "notes.txt").write_text("no image")
    (tree / "fish").mkdir()
    archive = _pack(tree, tmp_path / "ok.tar.gz")
    warnings_at_close: list[int] = []

    class Bar(folder_module.tqdm):
        def close(self) -> None:
            if not self.disable:
                warnings_at_close.append(len(caplog.records))
            super().close()

    monkeypatch.setattr(folder_module, "tqdm", Bar)
    with caplog.at_level(logging.WARNING, logger="training.data.folder"):
        read_image_folder(archive)

    assert warnings_at_close == [0]
    said = [record.getMessage() for record in caplog.records]
    assert len(said) == 3, said  # the .txt, the hidden folder, the empty one
    assert any("left out, not images by their extension" in text for text in said)
    assert any("hidden folder left out, not read" in text for text in said)


@pytest.mark.parametrize("packed", [False, True], ids=["folder", "archive"])
def test_class_names_differing_in_case_are_said_as_read_not_trained(tmp_path, caplog, packed):
    """``evaluate --data`` trains nothing: the warning is worded for both commands."""
    tree = _tree(tmp_path / "pets", {"Cat": 1, "cat": 1})
    source = _pack(tree, tmp_path / "pets.tar.gz") if packed else tree

    with caplog.at_level(logging.WARNING, logger="training.data.folder"):
        read_image_folder(source)

    assert "class folders whose names differ only in case are read as separate classes: Cat and cat" in caplog.text
    assert "trained" not in caplog.text


@needs_symlinks
def test_links_by_no_images_name_in_an_archive_are_said_as_the_folder_says_them(tmp_path, caplog):
    """A symlink or a hard link by no image's name, to a file the archive holds, was left out unsaid, where the
    folder reader says the same tree's links as files that are not images."""
    tree = _tree(tmp_path / "pets", {"cat": 2, "dog": 1})
    (tree / "readme.txt").write_text("about the pets")
    (tree / "cat" / "notes").symlink_to("../readme.txt")
    os.link(tree / "readme.txt", tree / "dog" / "copy")
    archive = _pack(tree, tmp_path / "pets.tar.gz")
    said = "3 files left out, not images by their extension: no extension (2), .txt (1)"

    with caplog.at_level(logging.WARNING, logger="training.data.folder"):
        read_image_folder(tree)
        read_image_folder(archive)

    assert f"pets: {said}" in caplog.text and f"pets.tar.gz: {said}" in caplog.text, caplog.text
    assert "not followed" not in caplog.text, caplog.text


@needs_symlinks
def test_many_links_back_up_the_tree_are_listed_as_other_warnings_list_them(tmp_path, caplog):
    """Every loop was named, however many: a line as long as the folder had links."""
    tree = _tree(tmp_path / "pets", {"cat": 2, "dog": 1})
    for i in range(30):
        (tree / f"up{i:02d}").symlink_to("..", target_is_directory=True)

    with caplog.at_level(logging.WARNING, logger="training.data.folder"):
        read_image_folder(tree)

    assert "(symlink loops): up00, up01, up02, up03, up04, up05, up06, up07, up08, up09, and 20 more" in caplog.text
    assert "up10" not in caplog.text, caplog.text


def test_a_folder_removed_during_the_walk_is_refused_in_one_line(tmp_path, monkeypatch):
    """A folder gone between its listing and its stat (removed, or its mount gone) raised FileNotFoundError's
    traceback from the walk; it is refused as an unreadable folder is."""
    import shutil

    tree = _tree(tmp_path / "pets", {"cat": 2, "dog": 1})
    walk_before = os.walk

    def walk_removing_dog(top, **kwargs):
        for folder, dirs, files in walk_before(top, **kwargs):
            if Path(folder).name == "dog":
                shutil.rmtree(folder)
            yield folder, dirs, files

    monkeypatch.setattr(folder_tree.os, "walk", walk_removing_dog)
    with pytest.raises(DatasetError, match=r"^cannot list the folder .*dog: no such file or directory"):
        folder_tree._tree_images(tree)

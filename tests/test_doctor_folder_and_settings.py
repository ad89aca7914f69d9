"""``python -m service doctor``: the folder to give where --folder holds the class folders a level or two down
(searched no further than a bound), and the settings `serve` warns of, said in the report too."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from conftest import ROOT


def _default_entry():
    from inference.manifest import load_manifest

    manifest = load_manifest(ROOT / "models", verify=False)
    return manifest.get(manifest.default_for("cpu").name)


def _class_tree(root: Path, classes: list[str]) -> None:
    for name in classes:
        (root / name).mkdir(parents=True)
        Image.new("RGB", (32, 32), (90, 120, 30)).save(root / name / "0.png")


def test_doctor_names_the_folder_two_levels_down_that_holds_the_class_folders(tmp_path, monkeypatch, capsys):
    """An unpacked archive (photos/cifar10/train/cat/...) given as --folder photos was refused as having no
    sub-folder named after a class, without a word of the folder that has them."""
    from service import doctor
    from service.__main__ import get_args_parser

    entry = _default_entry()
    photos = tmp_path / "photos"
    _class_tree(photos / "cifar10" / "train", entry.classes[:2])
    (photos / ".cache" / entry.classes[0]).mkdir(parents=True)  # hidden: not a folder to give
    monkeypatch.chdir(tmp_path)
    args = get_args_parser().parse_args(
        ["doctor", "--no-speed", "--device", "cpu", "--models-dir", str(ROOT / "models"), "--folder", "photos"]
        + ["--model", entry.name]
    )
    assert doctor.main(args) == 2
    inner = Path("photos", "cifar10", "train")
    said = capsys.readouterr().err.splitlines()[-1]  # after the steps said on the way
    assert said == (
        f"error: --folder photos has no sub-folder named after a class ({', '.join(entry.classes)}); the class "
        f"folders are in {inner}: give --folder {inner}"
    )


def _refusal(folder: Path, entry) -> str:
    """What reading ``folder`` for the doctor refuses it with."""
    from inference.manifest import ManifestError
    from service.doctor_folder import read_folder

    with pytest.raises(ManifestError) as refused:
        read_folder(folder, entry, 10)
    return str(refused.value)


def test_doctor_names_each_folder_one_level_down_that_holds_class_folders(tmp_path):
    entry = _default_entry()
    _class_tree(tmp_path / "data" / "train", entry.classes[:1])
    _class_tree(tmp_path / "data" / "test", entry.classes[1:2])
    (tmp_path / "data" / "notes").mkdir()
    said = _refusal(tmp_path / "data", entry)
    data = tmp_path / "data"
    assert said.endswith(f"; class folders are in {data / 'test'}, {data / 'train'}: give --folder one of them"), said


def test_a_folder_with_no_class_folders_anywhere_is_refused_as_before(tmp_path):
    entry = _default_entry()
    _class_tree(tmp_path / "a" / "b" / "c" / "d", entry.classes[:1])  # the class folders three levels down
    said = _refusal(tmp_path / "a", entry)
    assert said == f"--folder {tmp_path / 'a'} has no sub-folder named after a class ({', '.join(entry.classes)})"


def test_doctor_warns_of_a_batching_latency_longer_than_the_request_timeout_as_serve_does(monkeypatch, capsys):
    """serve warns of CIFAR_MAX_LATENCY_MS beyond CIFAR_TIMEOUT_S (a request times out before it is shed); the
    doctor, asked whether the service will work, said nothing of it."""
    from service import doctor
    from service.__main__ import get_args_parser
    from service.settings import SETTINGS, ServiceSettings

    entry = _default_entry()
    monkeypatch.setenv(SETTINGS["max_latency_ms"].env, "20000")
    monkeypatch.setenv(SETTINGS["timeout_s"].env, "5")
    monkeypatch.delenv(SETTINGS["workers"].env, raising=False)
    args = get_args_parser().parse_args(
        ["doctor", "--no-speed", "--device", "cpu", "--models-dir", str(ROOT / "models"), "--model", entry.name]
    )
    status = doctor.main(args)
    out = capsys.readouterr().out
    (warning,) = ServiceSettings(max_latency_ms=20000, timeout_s=5).contradictions(on_gpu=False, cores=1)
    lines = [line for line in out.splitlines() if line.startswith("WARN settings")]
    assert len(lines) == 1, out
    assert lines[0].endswith(f"  {warning}"), out
    # a warning, as for serve, which runs all the same: the verdict and exit status are the model checks' alone
    assert status == 0, out
    assert "will work on this host (1 warning above)" in out, out


def test_the_search_for_class_folders_further_down_stops_in_a_wide_tree(tmp_path, monkeypatch):
    """`--folder /` or a home folder with thousands of sub-folders was listed two levels down, every folder of it,
    to name the folder holding the class folders. Past a number of entries looked at, the search stops and names
    those it found before, as found among the entries looked at: a partial search cannot say a folder is the only
    one."""
    from service import doctor_folder

    entry = _default_entry()
    home = tmp_path / "home"
    for i in range(20):
        for j in range(20):
            (home / f"d{i:02}" / f"e{j:02}").mkdir(parents=True)
    _class_tree(home / "zz" / "train", entry.classes[:1])
    refused = f"--folder {home} has no sub-folder named after a class ({', '.join(entry.classes)})"
    inner = home / "zz" / "train"
    # The tree, 421 folders, is searched whole at the module's own bound, as before.
    assert _refusal(home, entry) == f"{refused}; the class folders are in {inner}: give --folder {inner}"
    # raising=False: without the bound (the code before it) the whole tree is searched and the assertion fails
    monkeypatch.setattr(doctor_folder, "SUGGESTION_SCAN_ENTRIES", 100, raising=False)
    assert _refusal(home, entry) == refused
    # Where class folders come first, the search stops all the same, naming what it found as a part.
    _class_tree(home / "aa", entry.classes[:1])
    assert _refusal(home, entry) == (
        f"{refused}; class folders are in {home / 'aa'} (among the first 100 entries a level or two down): give "
        f"--folder {home / 'aa'}"
    )
    # A folder the bound allows is still named as the one.
    assert _refusal(home / "zz", entry) == (
        f"--folder {home / 'zz'} has no sub-folder named after a class ({', '.join(entry.classes)}); the class "
        f"folders are in {inner}: give --folder {inner}"
    )


def test_doctor_warns_of_an_empty_key_variable_as_serve_does(monkeypatch, capsys):
    """serve warns "CIFAR_API_KEYS is set but empty: the service runs without keys" (`CIFAR_API_KEYS=${KEYS}` in a
    Compose file with KEYS unset); the doctor, asked whether the service will work, said nothing of it."""
    from service import doctor
    from service.__main__ import get_args_parser
    from service.settings import SETTINGS

    entry = _default_entry()
    for setting in SETTINGS.values():
        monkeypatch.delenv(setting.env, raising=False)
    monkeypatch.setenv("CIFAR_API_KEYS", " ")
    args = get_args_parser().parse_args(
        ["doctor", "--no-speed", "--device", "cpu", "--models-dir", str(ROOT / "models"), "--model", entry.name]
    )
    status = doctor.main(args)
    out = capsys.readouterr().out
    lines = [line for line in out.splitlines() if line.startswith("WARN settings")]
    said = "CIFAR_API_KEYS is set but empty: the service runs without keys (unset it, or give keys)"
    assert [line.split(None, 2)[2] for line in lines] == [said], out
    assert status == 0, out


def _flags(parser) -> dict[str, tuple]:
    """Each option of ``parser``, its dest, metavar, choices and help."""
    return {
        action.option_strings[0]: (action.dest, action.metavar, action.choices, action.help)
        for action in parser._actions
        if action.option_strings
    }


def test_doctor_takes_the_key_flags_serve_takes(monkeypatch, capsys, tmp_path):
    """The doctor had no --api-keys-file: where serve was to be given one, it warned of an empty CIFAR_API_KEYS_FILE
    the flag overrides, and could not check the file. Its key flags are serve's own, and read as serve reads them: a
    file serve would refuse is refused alike (exit 2), and one that holds a key leaves no warning."""
    from inference.messages import command_parser
    from service import doctor
    from service.__main__ import get_args_parser
    from service.settings import SETTINGS

    parser = get_args_parser()
    serve, checks = _flags(command_parser(parser, "serve")), _flags(command_parser(parser, "doctor"))
    for flag in ("--api-keys", "--api-keys-file"):
        assert checks.get(flag) == serve[flag]
    entry = _default_entry()
    for setting in SETTINGS.values():
        monkeypatch.delenv(setting.env, raising=False)
    monkeypatch.setenv("CIFAR_API_KEYS_FILE", " ")
    command = ["doctor", "--no-speed", "--device", "cpu", "--models-dir", str(ROOT / "models"), "--model", entry.name]
    keys, empty, missing = tmp_path / "keys", tmp_path / "empty", tmp_path / "missing"
    keys.write_text("# the team's key\nk1\n")
    empty.write_text("# none yet\n")
    for given in ([], ["--api-keys-file", str(keys)], ["--api-keys", "k1"]):
        status = doctor.main(parser.parse_args(command + given))
        out = capsys.readouterr().out
        warned = [line for line in out.splitlines() if line.startswith("WARN settings")]
        assert (status, len(warned)) == (0, 0 if given else 1), out
    for path, why in ((empty, f"{empty} holds no key"), (missing, f"{missing}: [Errno 2] No such file or directory")):
        assert doctor.main(parser.parse_args(command + ["--api-keys-file", str(path)])) == 2
        assert capsys.readouterr().err.startswith(f"error: --api-keys-file {why}")
    assert doctor.main(parser.parse_args(command + ["--api-keys-file", ""])) == 2
    assert (
        capsys.readouterr().err
        == "error: --api-keys-file is empty: give a value, or leave the flag out for its default\n"
    )


def test_doctor_reads_a_class_folder_as_the_scorer_labels_it_and_warns_of_images_in_its_sub_folders(tmp_path, capsys):
    """An image in a sub-folder of a class folder (ship/sub/0.png) was counted as a ship by the doctor, while the
    scorer labels it by the folder it sits in ('sub', no class) and training refuses the folder: the doctor's
    accuracy was on other images than the scorer's. It reads only the images directly in a class folder, and says
    those below it in one warning, once for the models that share their classes."""
    from inference.manifest import load_manifest
    from service import doctor
    from service.__main__ import get_args_parser
    from service.doctor_folder import read_folder

    entry = _default_entry()
    ship, other = entry.classes[8], entry.classes[3]
    data = tmp_path / "data"
    _class_tree(data, [ship, other])
    for nested in ("sub/1.png", "sub/2.png", "sub/deeper/3.png", "sub/.hidden/4.png", "sub/.5.png"):
        (data / ship / nested).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (32, 32)).save(data / ship / nested)
    (data / ship / ".cache").mkdir()  # hidden: not a sub-folder its images are said from
    Image.new("RGB", (32, 32)).save(data / ship / ".cache" / "6.png")
    _, labels, _ = read_folder(data, entry, 10)
    assert sorted(labels.tolist()) == [3, 8]
    models = load_manifest(ROOT / "models", verify=False).models
    twin = next(m for m in models if m.name != entry.name and m.classes == entry.classes)
    command = ["doctor", "--no-speed", "--device", "cpu", "--models-dir", str(ROOT / "models"), "--folder", str(data)]
    status = doctor.main(get_args_parser().parse_args(command + ["--model", entry.name, "--model", twin.name]))
    out = capsys.readouterr().out
    warned = [line.split(None, 2)[2] for line in out.splitlines() if line.startswith("WARN folder")]
    example = Path(ship, "sub", "1.png")
    assert warned == [
        f"3 images in sub-folders of class folders, not read: {example} and 2 more (an image's class is the folder "
        "it sits in, as the scorer labels it)"
    ], out
    assert f"{data}: 2 labelled images" in out, out
    assert status == 0, out


def test_doctor_walks_a_class_folders_sub_folders_once_each_and_no_further_than_a_bound(tmp_path, monkeypatch):
    """The search for images in a class folder's sub-folders walked all of a tree kept there (seconds and
    hundreds of MB for 200,000 files), and followed a link back up to --folder, counting the images it does read
    (cat/0.png, through dog/up/cat/0.png) as 'not read'. Each folder is listed once, and the search stops after
    NESTED_SCAN_ENTRIES entries below the class folders, its count then said as a least."""
    from service import doctor_folder
    from service.doctor_folder import class_folders, nested_warning

    entry = _default_entry()
    cat, dog = entry.classes[3], entry.classes[5]
    data = tmp_path / "data"
    _class_tree(data, [cat, dog])
    (data / dog / "up").symlink_to(data, target_is_directory=True)
    (data / dog / "x.png").mkdir()  # a folder, named as an image: its images are below the class folder
    Image.new("RGB", (32, 32)).save(data / dog / "x.png" / "1.png")
    matched = class_folders(data, entry)[0]
    reason = "an image's class is the folder it sits in, as the scorer labels it"
    assert nested_warning(data, matched) == (
        f"1 image in sub-folders of class folders, not read: {Path(dog, 'x.png', '1.png')} ({reason})"
    )
    for number in range(6):
        (data / cat / "sub" / f"d{number}").mkdir(parents=True)
        (data / cat / "sub" / f"d{number}" / "0.png").touch()
    monkeypatch.setattr(doctor_folder, "NESTED_SCAN_ENTRIES", 9, raising=False)
    assert nested_warning(data, matched) == (
        f"at least 3 images in sub-folders of class folders, not read: {Path(cat, 'sub', 'd0', '0.png')} and 2 more "
        f"(the search stopped after 9 entries; {reason})"
    )


def test_doctor_says_a_class_folder_it_may_not_list_in_one_line(tmp_path, monkeypatch, capsys):
    """A class folder this user may not list was a PermissionError traceback (it was passed over in silence
    before the doctor read only the images directly in it): one error line naming it."""
    import os

    from service import doctor
    from service.__main__ import get_args_parser

    entry = _default_entry()
    data = tmp_path / "data"
    _class_tree(data, entry.classes[:2])
    locked = str(data / entry.classes[1])
    real_listdir, real_scandir = os.listdir, os.scandir

    def refused(real):
        def listing(path="."):
            if os.path.abspath(os.fspath(path)) == locked:
                raise PermissionError(13, "Permission denied", os.fspath(path))
            return real(path)

        return listing

    monkeypatch.setattr(os, "listdir", refused(real_listdir))
    monkeypatch.setattr(os, "scandir", refused(real_scandir))
    command = ["doctor", "--no-speed", "--device", "cpu", "--models-dir", str(ROOT / "models"), "--folder", str(data)]
    assert doctor.main(get_args_parser().parse_args(command + ["--model", entry.name])) == 2
    said = capsys.readouterr().err.splitlines()[-1]
    assert said == f"error: --folder {data}: {entry.classes[1]} cannot be listed (Permission denied)"

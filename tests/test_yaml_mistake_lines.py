"""A recipe file, or a variant's config.yaml, holding YAML that parses but not as its writer meant (a tagged value
that is no such value) is refused naming the line of the mistake: a 60-line recipe's refusal that named no line
left its writer to hunt for it. A --set value is one line: it is named by its text, with no line number. YAML
that does not parse (cut short, two documents) is said as what it is."""

from __future__ import annotations

from pathlib import Path

import pytest

from inference.errors import UsageError
from training.__main__ import main as training_main
from training.checkpoint import CONFIG_FILE, LAST_FILE
from training.config import ConfigError
from training.config_recipes import build_config, load_recipe
from training.config_yaml import save_config
from training.ensemble_recipe import started_run
from training.reports.ablate_folders import check_variant_folder

# six lines before the mistake, which is on line 7
HEAD = "# my recipe: resnet9, narrow\nmodel:\n  name: resnet9\n  args: {width: 8}\n\ntrain:\n"


def _refused(argv: list[str], capsys) -> str:
    assert training_main(argv) == 2, argv
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    return err.strip()


@pytest.mark.parametrize(
    "line, said",
    [
        ("  lr: !!float abc", "'abc' is no float (could not convert string to float: 'abc'): quote it"),
        ("  epochs: !!int x", "'x' is not an integer"),
        ("  when: !!timestamp abc", "'abc' is no timestamp: quote it to give it as text"),
        ("  schedule: !!map abc", "!!map takes a mapping {...}, not a scalar: quote it to give it as text"),
        ("  amp: !!bool maybe", "'maybe' is no bool: quote it to give it as text"),
        ("  args: {width:8}", "'width:8' is a key without a value: put a space after its colon, {width: 8}"),
    ],
)
@pytest.mark.parametrize("command", ["train", "ablate"])
def test_a_recipe_files_mistake_is_refused_naming_its_line(line, said, command, tmp_path, capsys):
    recipe = tmp_path / "bad.yaml"
    recipe.write_text(f"{HEAD}{line}\n  batch_size: 16\n")
    out = tmp_path / "run"
    argv = ["train", "--recipe", str(recipe), "--out", str(out)]
    if command == "ablate":
        argv = ["ablate", "--recipe", str(recipe), "--vary", "use_se=true,false", "--out", str(out)]
    err = _refused(argv, capsys)
    assert f"recipe {str(recipe)!r}, line 7: {said}" in err, err
    assert not out.exists()  # refused before any training


def test_a_key_given_twice_names_both_its_lines_once(tmp_path, capsys):
    recipe = tmp_path / "twice.yaml"
    recipe.write_text(f"{HEAD}  epochs: 3\n  epochs: 4\n")
    err = _refused(["train", "--recipe", str(recipe), "--out", str(tmp_path / "run")], capsys)
    assert f"error: recipe {str(recipe)!r}: 'epochs' is given twice (lines 7 and 8): " in err, err


def test_a_recipe_that_is_no_yaml_still_names_its_line(tmp_path, capsys):
    recipe = tmp_path / "broken.yaml"
    recipe.write_text(f"{HEAD}  milestones: [30, 60\n")
    err = _refused(["train", "--recipe", str(recipe), "--out", str(tmp_path / "run")], capsys)
    assert f"recipe {str(recipe)!r} is not a YAML file: " in err and "begun at line 7 is never closed" in err, err


def test_a_set_value_is_named_by_its_text_not_a_line(tmp_path, capsys):
    argv = ["train", "--recipe", "resnet9_half_cpu", "--set", "lr=!!float abc", "--out", str(tmp_path / "run")]
    err = _refused(argv, capsys)
    assert "value '!!float abc': 'abc' is no float" in err and "line" not in err, err


@pytest.mark.parametrize(
    "value, said",
    [
        ("!!float abc", "'abc' is no float (could not convert string to float: 'abc')"),
        ("!!int x", "'x' is not an integer"),
    ],
)
def test_a_variant_config_yaml_edited_to_a_mistake_is_said_as_it_not_as_no_yaml(value, said, tmp_path):
    """It was "cannot be read (not YAML: ...)": false of YAML that parses, and the tagged float named no line."""
    config = build_config("resnet9_half_cpu")
    folder = tmp_path / "variant"
    folder.mkdir()
    (folder / LAST_FILE).write_bytes(b"a started run")
    save_config(config, folder / CONFIG_FILE)
    lines = (folder / CONFIG_FILE).read_text().splitlines()
    at = next(i for i, text in enumerate(lines) if text.strip().startswith("lr:"))
    lines[at] = lines[at].split(":")[0] + f": {value}"
    (folder / CONFIG_FILE).write_text("\n".join(lines) + "\n")
    with pytest.raises(UsageError) as refused:
        check_variant_folder(folder, config)
    message = str(refused.value)
    assert message.startswith(f"{folder / CONFIG_FILE} cannot be read (line {at + 1}: {said}"), message
    assert "not YAML" not in message and "\n" not in message, message


@pytest.mark.parametrize(
    "text, said",
    [
        ("recipe: resnet9_airbench94\noverrides: !!int x\n", "(line 2: 'x' is not an integer)"),
        (
            "recipe: {name: resnet9_airbench94, members: [\n",
            "(not YAML: expected the node content, but found '<stream end>' at line 2)",
        ),
    ],
)
def test_a_damaged_ensemble_run_record_is_refused_in_one_line_naming_its_line(text, said, tmp_path, capsys):
    """An ensemble run's record (ensemble.yaml) edited wrong: yaml's own text of it spans several lines with a
    snippet of the file, and put whole into the refusal made it several lines too."""
    out = tmp_path / "run"
    out.mkdir()
    (out / "ensemble.yaml").write_text(text)
    err = _refused(["resume", str(out)], capsys)
    assert f"{out / 'ensemble.yaml'} is damaged {said}" in err, err


def test_a_record_holding_two_yaml_documents_is_said_whole(tmp_path):
    """yaml says it as "expected a single document in the stream" then "but found another document": the second
    half alone was the refusal's reason."""
    (tmp_path / "ensemble.yaml").write_text("recipe: {name: r}\noverrides: []\n---\nrecipe: {name: r}\n")
    with pytest.raises(ConfigError) as refused:
        started_run(tmp_path)
    assert "(not YAML: expected a single document in the stream, but found another document at line 3)" in str(
        refused.value
    ), refused.value


def _recipe_refusal(tmp_path: Path, text: str) -> str:
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_recipe(str(recipe))
    return str(caught.value)


def test_an_alias_cut_short_at_the_end_is_not_said_to_be_left_open(tmp_path):
    """Not said as a bracket left open, nor as "the while scanning an alias"."""
    said = _recipe_refusal(tmp_path, "model: resnet9\nseed: *")
    assert "never closed" not in said and "the while" not in said, said
    assert "is not a YAML file: expected alphabetic or numeric character" in said, said


def test_a_trailing_comma_in_an_unclosed_bracket_names_no_line_past_the_recipe(tmp_path):
    """The bracket was said to be "begun" at a line past the recipe's last."""
    said = _recipe_refusal(tmp_path, "model: resnet9\nschedule: {milestones: [1,\n")
    assert "begun at line 3" not in said and "flow node" not in said, said
    assert said.endswith("expected the node content, but found '<stream end>': a [ or { is never closed"), said

"""The import rules between the packages (docs/architecture.md), checked on the source with ``ast``.

Every import counts, including those inside functions: a lazy import still ties one package to another.
"""

from __future__ import annotations

import argparse
import ast
from pathlib import Path

import pytest

from conftest import ROOT

# package -> top-level modules it must never import
FORBIDDEN = {
    "inference": {"training", "export", "service", "torch", "torchvision", "onnx", "onnxscript", "bentoml"},
    "training": {"export", "service", "bentoml"},
    "export": {"service", "bentoml"},
    "service": {"training", "export", "torch", "torchvision", "onnx", "onnxscript"},
}
# The one package whose modules may reach into BentoML's private packages.
BENTOML_INTERNALS = ("bentoml._internal", "_bentoml_impl", "_bentoml_sdk")
BENTOML_OWNER = "service.bentoml_compat"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path) -> list[tuple[int, str]]:
    """(line, absolute dotted name) of every import in the file, relative ones resolved."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            found.append((node.lineno, target))
            # `from . import x` and `from pkg import sub` name modules too
            found += [(node.lineno, f"{target}.{alias.name}") for alias in node.names]
    return found


def _sources(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


@pytest.mark.parametrize("package", list(FORBIDDEN))
def test_packages_import_only_what_the_architecture_allows(package):
    broken = [
        f"{path.relative_to(ROOT)}:{line} imports {target}"
        for path in _sources(package)
        for line, target in _imports(path)
        if target.split(".")[0] in FORBIDDEN[package]
    ]
    assert not broken, "\n".join(broken)


def test_the_http_service_and_the_scorer_do_not_import_each_other():
    broken = []
    for path in _sources("service"):
        name = _module_name(path)
        for line, target in _imports(path):
            in_scorer = name.startswith("service.score")
            if in_scorer and (target.startswith("service.service") or target.startswith(BENTOML_OWNER)):
                broken.append(f"{path.relative_to(ROOT)}:{line} (the scorer) imports {target}")
            if not in_scorer and name != "service.__main__" and target.startswith("service.score"):
                broken.append(f"{path.relative_to(ROOT)}:{line} (the HTTP service) imports {target}")
    assert not broken, "\n".join(broken)


def test_only_one_module_reaches_into_bentoml_internals():
    packages = ("inference", "training", "export", "service", "bench", "tests")
    paths = [path for package in packages for path in _sources(package)]
    users = sorted(
        {_module_name(path) for path in paths for _, target in _imports(path) if target.startswith(BENTOML_INTERNALS)}
    )
    assert users and all(user.startswith(f"{BENTOML_OWNER}.") for user in users), users


# Ray (and the pyarrow it brings) is an optional extra: the engine's modules use it, and only once it is opened.
RAY_OWNERS = (
    "service.score.ray_engine",
    "service.score.ray_stages",
    "service.score.ray_connect",
    "service.score.ray_failures",
)


def _module_level_imports(path: Path) -> list[tuple[int, str]]:
    """The imports of ``_imports`` that run when the module is imported (not those inside functions)."""
    lazy = {
        node.lineno
        for function in ast.walk(ast.parse(path.read_text(), str(path)))
        if isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef))
        for node in ast.walk(function)
        if isinstance(node, (ast.Import, ast.ImportFrom))
    }
    return [(line, target) for line, target in _imports(path) if line not in lazy]


def test_only_the_ray_engine_imports_ray_and_only_when_it_is_used():
    paths = [path for package in FORBIDDEN for path in _sources(package)]
    users = sorted(
        {_module_name(p) for p in paths for _, target in _imports(p) if target.split(".")[0] in ("ray", "pyarrow")}
    )
    assert users and set(users) <= set(RAY_OWNERS), users
    eager = [
        f"{path.relative_to(ROOT)}:{line} imports {target} at module level"
        for path in paths
        for line, target in _module_level_imports(path)
        if target.split(".")[0] in ("ray", "pyarrow")
        or (target.startswith(RAY_OWNERS) and _module_name(path) not in RAY_OWNERS)
    ]
    assert not eager, "\n".join(eager)


def test_the_rules_see_real_imports():
    """Guards the parser: a rule that finds no imports at all would pass anything."""
    assert (1, "numpy") in [(1, t) for _, t in _imports(ROOT / "inference" / "preprocess.py")]
    assert any(t == "inference.manifest" for _, t in _imports(ROOT / "inference" / "runtime.py"))


def _undocumented(parser: argparse.ArgumentParser, where: str) -> list[str]:
    missing = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                missing += _undocumented(sub, f"{where} {name}")
        elif action.help is None:
            missing.append(f"{where} {'/'.join(action.option_strings) or action.dest}")
    return missing


def test_every_command_line_flag_says_what_it_does():
    """`--help` is where a user learns a flag: none may be listed without a word."""
    import export.parsers as export_cli
    import service.__main__ as service_cli
    import training.__main__ as training_cli

    parsers = {
        "training": training_cli.get_args_parser(),
        "service": service_cli.get_args_parser(),
        **{
            f"export {name}": getattr(export_cli, f"{name}_parser")()
            for name in ("export", "verify", "rederive", "recover", "default", "remove", "list", "card")
        },
    }
    missing = [flag for where, parser in parsers.items() for flag in _undocumented(parser, where)]
    assert not missing, missing


def test_a_command_line_hears_its_own_info_and_libraries_only_from_warning():
    """An export ran hundreds of onnxscript/onnx_ir INFO lines past the user before its own messages."""
    import logging

    from inference.messages import OWN_LOGGERS, configure_logging

    saved = {name: logging.getLogger(name).level for name in ("", *OWN_LOGGERS)}
    try:
        configure_logging()
        assert logging.getLogger("export.pipeline").isEnabledFor(logging.INFO)
        assert logging.getLogger("training").isEnabledFor(logging.INFO)
        assert not logging.getLogger("onnx_ir.passes.common").isEnabledFor(logging.INFO)
        assert logging.getLogger("onnx_ir.passes.common").isEnabledFor(logging.WARNING)
    finally:
        for name, level in saved.items():
            logging.getLogger(name).setLevel(level)


def test_a_stop_whose_terminal_is_gone_still_exits_with_the_signals_status(monkeypatch):
    """SIGHUP from a closed terminal takes stderr with it: the message is lost, the status is still 128 + 1."""
    import signal

    from inference.interrupts import Terminated, say_stopped

    class Gone:
        def write(self, text):
            raise OSError(5, "Input/output error")

        def flush(self):
            raise OSError(5, "Input/output error")

    monkeypatch.setattr("sys.stderr", Gone())
    assert say_stopped(Terminated(signal.SIGHUP), "interrupted") == 128 + signal.SIGHUP
    assert say_stopped(KeyboardInterrupt(), "interrupted") == 130

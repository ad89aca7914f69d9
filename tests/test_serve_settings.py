"""`python -m service serve`'s settings as an operator meets them: the help that states each one's range, the line at
the start that says which were given and where from, and the settings that work against each other."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


class _Started(Exception):
    """Raised in place of the exec into BentoML: the checks passed and the server would start."""


@pytest.fixture
def no_settings_in_env(monkeypatch):
    from service.settings import SETTINGS

    for setting in SETTINGS.values():
        monkeypatch.delenv(setting.env, raising=False)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _serve_until_the_exec(monkeypatch, capsys, *flags: str) -> str:
    """What serve says on stderr up to the moment it would become the server."""
    from service.__main__ import main as service_main

    def started(*args):
        raise _Started

    monkeypatch.setattr(os, "execve", started)
    argv = ["serve", "--host", "127.0.0.1", "--port", str(_free_port()), *flags]
    with pytest.raises(_Started):
        service_main(argv)
    return capsys.readouterr().err


def test_the_help_states_the_range_of_every_number_setting():
    """`serve --help` gave each number setting's default but not what it accepts: `--max-batch-size 1` and
    `--max-body-bytes 1000` were refused at start for a minimum the help never mentioned."""
    from service.__main__ import get_args_parser

    parser = get_args_parser()
    serve = next(a for a in parser._subparsers._group_actions if a.dest == "command").choices["serve"]
    text = " ".join(serve.format_help().split())
    for said in (
        "(env CIFAR_MAX_BATCH_SIZE; default: 256; 2 or more)",
        "(env CIFAR_MAX_BODY_BYTES; default: 33554432; 1024 or more)",
        "(env CIFAR_THREADS; default: cores available / streams; 1 to 1024)",
        "(env CIFAR_WORKERS; default: one per visible GPU, 1 on a CPU host; 0 or more)",
        "(env CIFAR_TIMEOUT_S; default: 60; 1 or more)",
        "a flag wins over its variable",
    ):
        assert said in text, said


def test_serve_says_which_settings_were_given_and_which_flag_won(no_settings_in_env, monkeypatch, capsys):
    """Nothing at the start said which settings were in force: a CIFAR_WORKERS=4 left in the shell under
    `--workers 1`, or a CIFAR_MAX_IMAGES=8 the operator forgot, showed only in the service's behaviour. Keys are
    counted, never printed."""
    monkeypatch.setenv("CIFAR_WORKERS", "4")
    monkeypatch.setenv("CIFAR_MAX_IMAGES", " 8 ")
    monkeypatch.setenv("CIFAR_API_KEYS", "first-secret, second-secret")
    err = _serve_until_the_exec(
        monkeypatch, capsys, "--models-dir", str(ROOT / "models"), "--workers", "1", "--max-batch-size", "32"
    )
    line = next(line for line in err.splitlines() if line.startswith("settings:"))
    assert line == (
        f"settings: --models-dir {ROOT / 'models'}, --max-batch-size 32, CIFAR_MAX_IMAGES=8, "
        "--workers 1 (over CIFAR_WORKERS=4), CIFAR_API_KEYS=<2 keys>; the others at their defaults"
    )
    assert "secret" not in err and "warning" not in err
    assert err.index("settings:") < err.index("serving ")


def test_serve_with_no_setting_given_says_it_runs_on_the_defaults(no_settings_in_env, monkeypatch, capsys):
    err = _serve_until_the_exec(monkeypatch, capsys)
    assert "settings: the defaults (serve --help lists them)\n" in err


def test_settings_that_work_against_each_other_are_warned_of(no_settings_in_env, monkeypatch, capsys):
    """`--timeout 5` under the default 10 s batching latency (a queued request times out before it is shed), or
    more CPU workers than cores (each a copy of the models, GiBs each), started without a word."""
    from service.settings import ServiceSettings

    assert ServiceSettings().contradictions(on_gpu=False, cores=2) == []
    (many,) = ServiceSettings(workers=8).contradictions(on_gpu=False, cores=2)
    assert many.startswith("8 workers (--workers, CIFAR_WORKERS) on 2 core(s) without a GPU")
    assert ServiceSettings(workers=8).contradictions(on_gpu=True, cores=2) == []  # GPUs are shared round-robin
    assert ServiceSettings(workers=2).contradictions(on_gpu=False, cores=2) == []
    (late,) = ServiceSettings(timeout_s=5).contradictions(on_gpu=False, cores=2)
    assert "10000 ms (--max-latency-ms, CIFAR_MAX_LATENCY_MS)" in late and "5 s (--timeout, CIFAR_TIMEOUT_S)" in late
    assert ServiceSettings(timeout_s=10).contradictions(on_gpu=False, cores=2) == []

    monkeypatch.setenv("CIFAR_TIMEOUT_S", "5")
    err = _serve_until_the_exec(monkeypatch, capsys, "--device", "cpu")
    warnings = [line for line in err.splitlines() if line.startswith("warning:")]
    assert warnings == [f"warning: {late}"], err


def test_a_models_folder_from_the_environment_is_named_when_it_is_refused(
    no_settings_in_env, monkeypatch, capsys, tmp_path
):
    """A CIFAR_MODELS_DIR left set in the shell made a plain `serve` answer `no model manifest at /elsewhere/...`,
    with nothing to say where that folder came from."""
    from service.__main__ import main as service_main

    missing = tmp_path / "none"
    monkeypatch.setenv("CIFAR_MODELS_DIR", str(missing))
    assert service_main(["serve", "--port", str(_free_port())]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: no model manifest at {missing}") and err.endswith(
        f" (CIFAR_MODELS_DIR={missing})\n"
    ), err
    # Typed on the command line, the folder is the user's own: the variable it overrides is not named.
    assert service_main(["serve", "--port", str(_free_port()), "--models-dir", str(missing)]) == 2
    assert "CIFAR_MODELS_DIR" not in capsys.readouterr().err


def test_an_empty_key_variable_is_warned_of_as_the_service_runs_open(no_settings_in_env, monkeypatch, capsys):
    """`CIFAR_API_KEYS=${KEYS}` in a Compose file with KEYS unset ran the service open without a word, where
    `--api-keys " "` is refused. Empty still means the default, with a warning; none where keys come otherwise."""
    keys = "warning: CIFAR_API_KEYS is set but empty: the service runs without keys (unset it, or give keys)"
    key_file = (
        "warning: CIFAR_API_KEYS_FILE is set but empty: the service runs without keys (unset it, or give a file "
        "of keys)"
    )
    monkeypatch.setenv("CIFAR_API_KEYS", "")
    err = _serve_until_the_exec(monkeypatch, capsys, "--models-dir", str(ROOT / "models"), "--device", "cpu")
    assert [line for line in err.splitlines() if line.startswith("warning:")] == [keys], err
    err = _serve_until_the_exec(monkeypatch, capsys, "--device", "cpu", "--api-keys", "first-secret")
    assert "warning:" not in err and "settings: --device cpu, --api-keys <1 key>; " in err, err

    from service.settings import ServiceSettings, start_notes

    def warnings(environ: dict[str, str], settings: ServiceSettings) -> list[str]:
        notes = start_notes(environ, {}, settings, on_gpu=False, cores=2)
        return [note for note in notes if note.startswith("warning:")]

    open_service = ServiceSettings()
    assert warnings({"CIFAR_API_KEYS": " ", "CIFAR_API_KEYS_FILE": ""}, open_service) == [keys, key_file]
    assert warnings({"CIFAR_API_KEYS_FILE": "\t"}, open_service) == [key_file]
    assert warnings({}, open_service) == []
    from_file = ServiceSettings(api_keys_file=Path("/run/secrets/keys"))  # the keys come from the file
    assert warnings({"CIFAR_API_KEYS": ""}, from_file) == []
    assert warnings({"CIFAR_API_KEYS_FILE": ""}, ServiceSettings(api_keys="first-secret")) == []


def test_the_containers_bentoml_serve_says_the_settings_once_from_the_servers_process(no_settings_in_env):
    """`bentoml serve service.service:Classifier` (the image's command) said neither which settings it runs with
    nor the warnings `python -m service serve` prints. Its server's process says them now: not each worker (each
    would say them again), nor a server that `serve` became (it said them before the exec)."""
    import subprocess
    import sys

    from service.loading import CHECKED_ENV, manifest_digest

    # The server's process imports the service as this one does (no worker index); a worker imports it with one.
    models = ROOT / "models"
    env = {name: value for name, value in os.environ.items() if not name.startswith("CIFAR_")}
    env |= {"CIFAR_MODELS_DIR": str(models), "CIFAR_TIMEOUT_S": "5", "CIFAR_API_KEYS": "", "CIFAR_DEVICE": "cpu"}
    run = dict(cwd=ROOT, capture_output=True, text=True, timeout=120)

    def imported_by(command: str) -> str:
        # as bentoml's command line imports the service: inside its click command's context
        return (
            "import click\n"
            f"with click.Context(click.Command({command!r}), info_name={command!r}):\n"
            "    import service.service\n"
        )

    done = subprocess.run([sys.executable, "-c", imported_by("serve")], env=env, **run)
    said = [line for line in done.stderr.splitlines() if line.startswith(("settings:", "warning:"))]
    assert done.returncode == 0 and len(said) == 3, done.stderr[-2000:]
    assert said[0] == (
        f"settings: CIFAR_MODELS_DIR={models}, CIFAR_DEVICE=cpu, CIFAR_TIMEOUT_S=5; the others at their defaults"
    )
    assert said[1].startswith("warning: CIFAR_API_KEYS is set but empty") and "5 s (--timeout" in said[2], said
    # `bentoml build`, a test or a script importing the module: no server starts, nothing to say
    for code in (imported_by("build"), "import service.service"):
        done = subprocess.run([sys.executable, "-c", code], env=env, **run)
        assert done.returncode == 0, done.stderr[-2000:]
        assert "settings:" not in done.stderr and "warning:" not in done.stderr, done.stderr[-2000:]
    env[CHECKED_ENV] = manifest_digest(models)  # as `python -m service serve` execs the server
    done = subprocess.run([sys.executable, "-c", imported_by("serve")], env=env, **run)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "settings:" not in done.stderr and "warning:" not in done.stderr, done.stderr[-2000:]

    from service.startup import says_the_settings

    assert says_the_settings(None, {}, "serve")
    assert not says_the_settings(0, {}, "serve") and not says_the_settings(1, {}, "serve")
    assert not says_the_settings(None, {CHECKED_ENV: "0" * 64}, "serve")
    assert not says_the_settings(None, {}, "build") and not says_the_settings(None, {}, None)


def test_the_help_of_development_does_not_promise_a_single_process():
    """`--development` was said to run "a single process, no worker supervisor", but BentoML 1.4 keeps its process
    manager and starts every worker of --workers in development mode too (`serve --development --workers 2` ran a
    supervisor and two workers)."""
    from service.__main__ import get_args_parser

    parser = get_args_parser()
    serve = next(a for a in parser._subparsers._group_actions if a.dest == "command").choices["serve"]
    development = next(a for a in serve._actions if "--development" in a.option_strings)
    assert "no worker supervisor" not in development.help
    assert "still runs its process manager and --workers worker processes" in development.help

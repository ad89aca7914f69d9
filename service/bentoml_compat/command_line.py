"""BentoML's command line, run in this process with a metrics folder per server (:func:`serve_with_own_metrics`):
``bentoml serve`` keeps its workers' metrics in ``$BENTOML_HOME/prometheus_multiproc_dir`` and empties it when it
starts, so every other BentoML server started on the host would reset this one's /metrics and mix its own counts
in."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from inference.interrupts import interrupt_within, say_stopped, stopped_while_importing, stops_recorded

from .version import _unsupported, log

METRICS_FOLDER = "cifar-metrics"  # beside BentoML's own prometheus_multiproc_dir, which a plain `bentoml serve` empties


def metrics_folder(port: int) -> Path:
    """The folder of the metrics of the server on ``port``: one server per port, so no other server's."""
    from bentoml._internal.configuration.containers import BentoMLContainer

    return Path(BentoMLContainer.bentoml_home.get()) / METRICS_FOLDER / f"port-{port}"


def serve_with_own_metrics(argv: list[str], port: int) -> int:
    """``bentoml ARGV`` (its command line's entry point, in this process) with the workers' metrics in
    ``metrics_folder(port)``, which BentoML empties at the start as it would its shared one: the exit status."""
    if not _unsupported("the metrics stay in BentoML's shared folder, which other servers on this host empty"):
        try:
            from bentoml._internal.configuration.containers import BentoMLContainer

            BentoMLContainer.prometheus_multiproc_dir.set(str(metrics_folder(port)))
        except Exception as exc:  # an internal that moved: BentoML's shared folder, as `bentoml serve` has it
            log.warning("metrics stay in BentoML's shared folder (%s: %s)", type(exc).__name__, exc)
    with stops_recorded() as seen:
        try:
            from bentoml_cli.cli import cli
        except (KeyboardInterrupt, Exception) as exc:  # Ctrl-C in the second of imports before BentoML handles it
            return stopped_while_importing(exc, seen)  # pydantic-core's SchemaError, for one, may be a stop

    sys.argv = ["bentoml", *argv]
    return run_command(cli, argv)


def run_command(command: click.Command, argv: list[str]) -> int:
    """Run click ``command`` on ``argv`` as its standalone entry point does and return the exit status, except for a
    stop (Ctrl-C, or a termination inference/interrupts.py turns into one) before BentoML's process manager takes
    the signals over: it ends as every other command's stop does, ``interrupted`` and 128 + the signal (click's entry
    point says ``Aborted!`` after a blank line, status 1)."""
    try:
        with command.make_context("bentoml", list(argv)) as ctx:
            command.invoke(ctx)
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.exceptions.Abort:  # a prompt declined: click's own answer
        print("Aborted!", file=sys.stderr, flush=True)
        return 1
    except (KeyboardInterrupt, Exception) as exc:
        # A stop may come back inside another error: an ImportError from ONNX Runtime's native module, which
        # BentoML's loader reports as a failed import of the service.
        stop = interrupt_within(exc)
        if stop is not None:
            return say_stopped(stop, "interrupted")
        if isinstance(exc, click.ClickException):
            exc.show()
            return exc.exit_code
        raise
    return 0

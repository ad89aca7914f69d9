"""Command line: ``python -m service {serve,score,doctor} ...``."""

from __future__ import annotations

import argparse

from inference.interrupts import give_back, stopped_while_importing, stops_recorded, take_over_terminations
from inference.messages import command_parser, configure_streams, flushed, reader_gone, stop_writing


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m service",
        description=(
            "Serve the exported models over HTTP (BentoML), score folders of images with them, or check that "
            "this host can serve them (doctor)."
        ),
    )
    sub = parser.add_subparsers(dest="command", required=True)
    from .doctor import add_doctor_parser
    from .score.cli import add_score_parser
    from .serve_cli import add_serve_parser

    add_serve_parser(sub)
    add_score_parser(sub)
    add_doctor_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    configure_streams()
    previous = take_over_terminations()  # SIGTERM there too: its default action kills the process without a word
    try:
        with stops_recorded() as seen:
            parser = get_args_parser()  # imports numpy, ONNX Runtime, Pillow: long enough for a Ctrl-C to land in
    except (KeyboardInterrupt, Exception) as exc:  # Ctrl-C before anything has started: no traceback
        return stopped_while_importing(exc, seen)
    finally:
        give_back(previous)  # each command answers terminations its own way
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        command_parser(parser, args.command).error(f"unrecognized arguments: {' '.join(unknown)}")
    try:
        return flushed(args.fn(args))
    except BrokenPipeError:
        if not reader_gone():  # a pipe or socket of the command's own: a bug, which keeps its traceback
            raise
        return stop_writing()  # `doctor | head -1`, as `score | head -1` ends


if __name__ == "__main__":
    from service.process_end import end_process

    end_process(main())

"""Command line: ``python -m service {serve,score,doctor} ...``."""

from __future__ import annotations

import argparse

from inference.interrupts import stopped_while_importing


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
    try:
        parser = get_args_parser()  # imports numpy, ONNX Runtime, Pillow: most of a second
    except (KeyboardInterrupt, ImportError) as exc:  # Ctrl-C before anything has started: no traceback
        return stopped_while_importing(exc)
    args = parser.parse_args(argv)
    return args.fn(args)


if __name__ == "__main__":
    from service.process_end import end_process

    end_process(main())

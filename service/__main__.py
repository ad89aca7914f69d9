"""Command line: ``python -m service {serve,score} ...``."""

from __future__ import annotations

import argparse
import sys


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m service",
        description=("Serve the exported models over HTTP (BentoML) or score folders of images with them."),
    )
    sub = parser.add_subparsers(dest="command", required=True)
    from .score.cli import add_score_parser
    from .serve_cli import add_serve_parser

    add_serve_parser(sub)
    add_score_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = get_args_parser().parse_args(argv)
    return args.fn(args)


if __name__ == "__main__":
    sys.exit(main())

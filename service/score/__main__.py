"""``python -m service.score DIR ...``: the ``score`` command on its own."""

from __future__ import annotations

from inference.interrupts import stopped_while_importing, stops_recorded


def main() -> int:
    with stops_recorded() as seen:
        try:
            from .cli import main as score  # imports numpy, ONNX Runtime, Pillow: long enough for a Ctrl-C to land in
        except (KeyboardInterrupt, Exception) as exc:  # as in service/__main__.py
            return stopped_while_importing(exc, seen)
    return score()


if __name__ == "__main__":
    from service.process_end import end_process

    end_process(main())

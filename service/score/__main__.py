"""``python -m service.score DIR ...``: the ``score`` command on its own."""

from __future__ import annotations

from inference.interrupts import interrupt_within, say_stopped


def main() -> int:
    try:
        from .cli import main as score  # imports numpy, ONNX Runtime, Pillow: most of a second
    except (KeyboardInterrupt, ImportError) as exc:
        # As in service/__main__.py: a Ctrl-C during the imports, even inside ONNX Runtime's native module (which
        # turns it into an ImportError), is an interrupt, not a traceback.
        stop = interrupt_within(exc)
        if stop is None:
            raise
        return say_stopped(stop, "interrupted")
    return score()


if __name__ == "__main__":
    from service.process_end import end_process

    end_process(main())

"""``python -m service.score DIR ...``: the ``score`` command on its own."""

from .cli import main

if __name__ == "__main__":
    from service.process_end import end_process

    end_process(main())

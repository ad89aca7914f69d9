"""``python -m service.score DIR ...``: the ``score`` command on its own."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())

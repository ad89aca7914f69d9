"""``python -m service.bentoml_serve PORT ARGS...``: ``python -m bentoml ARGS...`` for the server on PORT, with its
own metrics folder (``bentoml_compat.serve_with_own_metrics``). What ``python -m service serve`` runs."""

from __future__ import annotations

import sys

from .bentoml_compat import serve_with_own_metrics

if __name__ == "__main__":
    serve_with_own_metrics(sys.argv[2:], int(sys.argv[1]))

"""Whether the installed BentoML is one this package's internals were written against: every other module asks
before reaching in, and takes BentoML's documented way (with a warning) when the answer is no."""

from __future__ import annotations

import logging

import bentoml

# Under "bentoml": the logger BentoML configures (INFO) in its server processes.
log = logging.getLogger("bentoml.cifar.compat")

# The BentoML versions whose internals this package was written against (major.minor); tested with 1.4.39.
SUPPORTED_VERSIONS = ("1.4",)


def _supported(version: str) -> bool:
    return ".".join(version.split(".")[:2]) in SUPPORTED_VERSIONS


SUPPORTED = _supported(bentoml.__version__)


def _unsupported(what: str) -> bool:
    """True (with a warning) when the installed BentoML is not one this package knows."""
    if not SUPPORTED:
        log.warning(
            "BentoML %s is not a version this service was written against (%s): %s",
            bentoml.__version__,
            ", ".join(f"{v}.x" for v in SUPPORTED_VERSIONS),
            what,
        )
    return not SUPPORTED

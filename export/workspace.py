"""The folder an export or rederive builds its graph in.

It lies inside the models folder, so the finished file is renamed into place on the same file system. Ctrl-C and
SIGTERM remove it on the way out; SIGKILL (an out-of-memory kill, a scheduler's hard stop) cannot, so the folder
is named after the process and host that made it, and the next export into that folder removes the ones whose
process is gone. Folders of another host (a models folder on a shared file system) are left to that host.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import socket
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from inference.files import process_running

log = logging.getLogger(__name__)

PREFIX = ".export-"
# tempfile's random part is lowercase letters, digits and underscores; a host name may itself hold dashes
_NAME = re.compile(rf"^{re.escape(PREFIX)}(\d+)@(.+)-[a-z0-9_]+$")


def leftovers(models_dir: Path) -> list[Path]:
    """Work folders in ``models_dir`` whose process, on this host, no longer runs."""
    host = socket.gethostname()
    found = []
    for path in sorted(models_dir.glob(f"{PREFIX}*")):
        match = _NAME.match(path.name)
        if match is None or not path.is_dir() or match.group(2) != host:
            continue
        pid = int(match.group(1))
        if pid != os.getpid() and not process_running(pid):
            found.append(path)
    return found


@contextmanager
def workspace(models_dir: Path) -> Iterator[Path]:
    """A new, empty work folder in ``models_dir`` for the body, removed afterwards; the folders killed exports
    left there are removed first, each named in a warning."""
    for path in leftovers(models_dir):
        shutil.rmtree(path, ignore_errors=True)
        log.warning("removed %s, the work folder of an export that was killed before it could clean up", path)
    with tempfile.TemporaryDirectory(dir=models_dir, prefix=f"{PREFIX}{os.getpid()}@{socket.gethostname()}-") as tmp:
        yield Path(tmp)

"""What a process and all its descendants (a server and its workers) use, read from /proc: CPU time, and
resident memory, sampled or at its peak over a block."""

from __future__ import annotations

import os
import threading
from pathlib import Path


def _process_tree(root: int) -> dict[int, list[str]]:
    """/proc/PID/stat fields (after the command) of a process and all its descendants (the server's workers)."""
    parent, fields = {}, {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            after_command = stat.read_text().rsplit(")", 1)[1].split()  # state, ppid, ...
        except OSError:
            continue
        pid = int(stat.parent.name)
        parent[pid], fields[pid] = int(after_command[1]), after_command
    tree = {}
    for pid in fields:
        p = pid
        while p and p != root:
            p = parent.get(p, 0)
        if p == root:
            tree[pid] = fields[pid]
    return tree


def tree_cpu_seconds(root: int | None) -> float | None:
    """CPU time (user + system) of a process and all its descendants, from /proc."""
    if root is None or not Path("/proc").is_dir():
        return None
    ticks = os.sysconf("SC_CLK_TCK")
    return sum((int(f[11]) + int(f[12])) / ticks for f in _process_tree(root).values())


def tree_memory_mib(root: int | None) -> dict[str, float] | None:
    """Resident memory of a process and all its descendants, from /proc/PID/smaps_rollup: the sum of their
    RSS (pages shared between the workers counted in each) and of their PSS (each shared page split among
    its sharers: what they hold together, near what a container's memory limit counts)."""
    if root is None or not Path("/proc").is_dir():
        return None
    total = {"rss": 0.0, "pss": 0.0}
    read = False
    for pid in _process_tree(root):
        try:
            rollup = Path(f"/proc/{pid}/smaps_rollup").read_text()
        except OSError:  # gone since the tree was read, or not ours to read
            continue
        read = True
        for line in rollup.splitlines():
            key, _, value = line.partition(":")
            if key in ("Rss", "Pss"):
                total[key.lower()] += int(value.split()[0]) / 1024
    return {k: round(v, 1) for k, v in total.items()} if read else None


class MemoryPeak:
    """The largest PSS total of a process tree, sampled every ``interval`` seconds while the block runs."""

    def __init__(self, root: int | None, interval: float = 0.25) -> None:
        self.root, self.interval, self.peak = root, interval, None
        self._stop = threading.Event()

    def _sample(self) -> None:
        memory = tree_memory_mib(self.root)
        if memory and (self.peak is None or memory["pss"] > self.peak["pss"]):
            self.peak = memory

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def __enter__(self) -> MemoryPeak:
        self._sample()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()

"""The doctor's report: each check's finding, and the one verdict a host gets from them.

Kept apart from the checks: each check only adds what it found, and the verdict the exit status rests on is
worded in one place, whichever check failed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from inference.devices import Device
from inference.messages import counted

Status = Literal["ok", "warn", "fail", "info"]


@dataclass
class Finding:
    status: Status
    topic: str
    text: str


@dataclass
class Report:
    device: Device
    findings: list[Finding] = field(default_factory=list)

    def add(self, status: Status, topic: str, text: str) -> None:
        self.findings.append(Finding(status, topic, text))

    @property
    def failures(self) -> list[Finding]:
        return [f for f in self.findings if f.status == "fail"]

    @property
    def passed(self) -> bool:
        return not self.failures

    def render(self) -> str:
        marks = {"ok": "ok  ", "warn": "WARN", "fail": "FAIL", "info": "    "}
        width = max((len(f.topic) for f in self.findings), default=0)
        lines = [f"{marks[f.status]} {f.topic:<{width}}  {f.text}" for f in self.findings]
        if self.passed:
            warned = sum(f.status == "warn" for f in self.findings)
            tail = f" ({counted(warned, 'warning')} above)" if warned else ""
            lines.append(f"\n--device {self.device}: will work on this host{tail}")
        else:
            first, more = self.failures[0], len(self.failures) - 1
            tail = f" (and {counted(more, 'more failure', 'more failures')} above)" if more else ""
            lines.append(f"\n--device {self.device}: will NOT work on this host: {first.topic}: {first.text}{tail}")
        return "\n".join(lines)

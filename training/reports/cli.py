"""Subcommands for reports; filled in by the evaluation work."""
from __future__ import annotations


def add_report_commands(sub) -> None:
    return None

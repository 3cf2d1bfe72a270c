"""Durations as people read them, in every line the runs print (progress, ETA, dry-run estimates)."""

from __future__ import annotations


def format_duration(seconds: float) -> str:
    """``"42 s"``, ``"3 min 07 s"`` or ``"2 h 05 min"`` (negative counts as 0)."""
    seconds = max(0, int(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"

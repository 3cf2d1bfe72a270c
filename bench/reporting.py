"""What every benchmark here ends with: its JSON report printed, and written to ``--out``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def emit(report: dict[str, Any], out: str | None, *, sort_keys: bool = False) -> int:
    """Print ``report`` as indented JSON, write the same text to ``out`` (when given), return 0
    (the script's exit code)."""
    text = json.dumps(report, indent=2, sort_keys=sort_keys)
    if out:
        Path(out).write_text(text + "\n")
    print(text)
    return 0

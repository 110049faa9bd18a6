"""Writes one benchmark's figures into its own section of docs/benchmarks.md."""

from __future__ import annotations

import os
import platform
import time
from pathlib import Path


def write_section(path: Path, name: str, body: str, note: str = "") -> None:
    """Replace the section between this benchmark's markers (append it if absent)."""
    start, end = f"<!-- bench:{name}:start -->", f"<!-- bench:{name}:end -->"
    header = f"Machine: {platform.platform()}, {os.cpu_count()} cores; {time.strftime('%Y-%m-%d')}."
    section = f"{start}\n{header}{' ' + note if note else ''}\n\n{body}\n{end}"
    text = path.read_text()
    if start in text and end in text:
        text = text[: text.index(start)] + section + text[text.index(end) + len(end) :]
    else:
        text += "\n" + section + "\n"
    path.write_text(text)
    print(f"wrote {path} ({name})")

"""Writes one benchmark's figures into its own section of docs/benchmarks.md."""

from __future__ import annotations

import os
import platform
import time
from pathlib import Path


def reference_loop() -> float:
    """CPU seconds of a fixed pure-Python loop (the best of three): the speed of this
    shared machine when the figures were taken. The same code has measured 2.5 times
    slower on some days; this says which kind of day a section comes from."""
    best = float("inf")
    for _ in range(3):
        t = time.process_time()
        sum(range(30_000_000))
        best = min(best, time.process_time() - t)
    return best


def write_section(path: Path, name: str, body: str, note: str = "") -> None:
    """Replace the section between this benchmark's markers (append it if absent)."""
    start, end = f"<!-- bench:{name}:start -->", f"<!-- bench:{name}:end -->"
    header = (
        f"Machine: {platform.platform()}, {os.cpu_count()} cores, reference loop "
        f"{reference_loop():.2f} s of CPU (`sum(range(30_000_000))`, lower is faster); "
        f"{time.strftime('%Y-%m-%d')}."
    )
    section = f"{start}\n{header}{' ' + note if note else ''}\n\n{body}\n{end}"
    text = path.read_text()
    if start in text and end in text:
        text = text[: text.index(start)] + section + text[text.index(end) + len(end) :]
    else:
        text += "\n" + section + "\n"
    path.write_text(text)
    print(f"wrote {path} ({name})")


def write_chart(
    docs: Path,
    name: str,
    title: str,
    groups: list[str],
    bars: dict[str, list[float]],
    unit: str,
    *,
    whiskers: tuple[str, dict[str, list[float]]] | None = None,
    marks: dict[str, list[float | None]] | None = None,
) -> str:
    """A grouped bar chart beside ``docs`` (bars: medians; whiskers: the tails' name,
    "p99" or "max" as ``common.tail_name`` gives it, and their figures by bar label;
    marks: an anchor's figure per group); returns the Markdown line that shows it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tail_name, tops = whiskers or ("", {})
    fig, ax = plt.subplots(figsize=(8, 3.8))
    width = 0.8 / max(1, len(bars))
    for i, (label, values) in enumerate(bars.items()):
        xs = [g - 0.4 + width * (i + 0.5) for g in range(len(groups))]
        top = tops.get(label)
        yerr = None
        if top is not None:
            above = [max(0.0, t - v) for t, v in zip(top, values, strict=True)]
            yerr = [[0.0] * len(values), above]
        ax.bar(xs, values, width, label=label, yerr=yerr, capsize=3)
    if tops:
        # The whiskers' name in the legend: a p99 or, from fewer than 100 runs, the max.
        ax.plot([], [], color="black", linewidth=1, label=f"whiskers: {tail_name}")
    for label, marked in (marks or {}).items():
        points = [(g, v) for g, v in enumerate(marked) if v is not None]
        if points:
            ax.scatter(
                [g for g, _ in points],
                [v for _, v in points],
                marker="_",
                s=900,
                color="black",
                label=label,
            )
    ax.set_xticks(range(len(groups)), groups)
    ax.set_ylabel(unit)
    ax.set_title(title, loc="left", fontsize="medium")
    ax.legend(fontsize="small")
    out = docs.parent / f"bench-{name}.png"
    fig.savefig(out, dpi=100, bbox_inches="tight")
    plt.close(fig)
    print(f"wrote {out}")
    return f"![{title}]({out.name})"

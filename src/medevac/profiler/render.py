"""A profile shown: the timeline and the component tables (rich), and charts (matplotlib).

The terminal timeline follows Doctor's picture: one row per checkpoint, its offset
from T00 and a bar from the checkpoint it waited for. The charts are the same
timeline as a Gantt chart, twice: the first seconds (detection, alarms, state) and the
whole fault (with the recovery).
"""

from __future__ import annotations

import html
import io
import threading
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from medevac.checkpoints import Mark
from medevac.profiler.profile import CHECKPOINTS, Profile, waited_for

# pyplot keeps global state: charts drawn on the API's threads are drawn one at a time.
_PLOTTING = threading.Lock()

COLOURS = {
    "monitor": "#1f77b4",
    "inspector": "#ff7f0e",
    "controller": "#2ca02c",
    "notifier": "#9467bd",
    "consumer": "#8c564b",
    "recovery": "#d62728",
}


def duration(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms" if abs(seconds) < 10 else f"{seconds:.1f} s"


def timeline_table(profile: Profile, *, width: int = 40) -> Table:
    """Checkpoints in time order, with a bar from what each waited for."""
    rows = sorted(
        (c for c in CHECKPOINTS if c.name in profile.stamps),
        key=lambda c: (profile.stamps[c.name], c.name),
    )
    span = max(max(profile.stamps.values()) - profile.t00, 1e-6)
    table = Table(title=f"timeline (T00 {profile.t00_source})", title_justify="left")
    for col in ("", "checkpoint", "by"):
        table.add_column(col)
    table.add_column("at", justify="right")
    table.add_column("", no_wrap=True)
    for c in rows:
        at = profile.stamps[c.name] - profile.t00
        start = profile.stamps[waited_for(profile.stamps, c.name)] - profile.t00
        a = min(width - 1, round(start / span * width))
        b = min(width, max(a + 1, round(at / span * width)))
        bar = " " * a + "─" * (b - a)
        colour = COLOURS.get(c.component, "white")
        table.add_row(c.name, c.label, c.component, duration(at), f"[{colour}]{bar}[/]")
    return table


def component_tables(profile: Profile) -> list[Table]:
    tables = []
    for goal in profile.goals:
        title = f"{goal.label}: {duration(goal.total)} (T00 to {goal.end})"
        t = Table(title=title, title_justify="left", min_width=len(title))
        t.add_column("component")
        t.add_column("time cost", justify="right")
        t.add_column("percentage", justify="right")
        for component, seconds, share in goal.components():
            t.add_row(component, duration(seconds), f"{share * 100:.0f} %")
        tables.append(t)
    return tables


def print_profile(profile: Profile, console: Console, *, incident: str | None = None) -> None:
    if incident:
        console.print(f"[bold]profile of incident {incident}[/]")
    console.print(timeline_table(profile))
    for t in component_tables(profile):
        console.print(t)
    missing = profile.missing()
    if missing:
        console.print(f"not recorded: {', '.join(missing)}")
    for v in profile.violations():
        console.print(f"[yellow]out of order: {v}[/]")


# -- charts --------------------------------------------------------------------------


def _figure(profile: Profile) -> Any:
    import matplotlib

    matplotlib.use("Agg")  # files only, never a display
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    present = [c for c in CHECKPOINTS if c.name in profile.stamps and c.name != Mark.T00]
    critical = {s.end for g in profile.goals for s in g.path}
    early_end = max(
        (profile.stamps[n] for n in (Mark.T09, Mark.T04, Mark.T05, Mark.R1) if n in profile.stamps),
        default=max(profile.stamps.values()),
    )
    spans = [("first seconds", early_end - profile.t00, 1000.0, "ms")]
    whole = max(profile.stamps.values()) - profile.t00
    if whole > (early_end - profile.t00) * 1.5:
        spans.append(("the whole fault", whole, 1.0, "s"))
    fig, axes = plt.subplots(
        len(spans),
        1,
        figsize=(12, 1.6 + 0.4 * len(present) * len(spans)),
        squeeze=False,
    )
    fig.subplots_adjust(left=0.3, right=0.95, top=0.9, bottom=0.08, hspace=0.35)
    for ax, (title, span, scale, unit) in zip(axes[:, 0], spans, strict=True):
        for y, c in enumerate(present):
            start = (profile.stamps[waited_for(profile.stamps, c.name)] - profile.t00) * scale
            end = (profile.stamps[c.name] - profile.t00) * scale
            if start > span * scale:
                continue  # beyond this panel: the next one shows it
            ax.barh(
                y,
                max(end - start, span * scale / 400),
                left=start,
                color=COLOURS.get(c.component, "grey"),
                alpha=1.0 if c.name in critical else 0.35,
            )
            if end <= span * scale:
                ax.text(end, y, f" {end:.0f}" if unit == "ms" else f" {end:.1f}", va="center")
        ax.set_yticks(range(len(present)), [f"{c.name} {c.label}" for c in present])
        ax.invert_yaxis()
        ax.set_xlim(0, span * scale * 1.12)
        ax.set_xlabel(f"{unit} since T00 ({profile.t00_source})")
        ax.set_title(title, loc="left")
    handles = [Patch(color=col, label=name) for name, col in COLOURS.items()]
    fig.legend(handles=handles, loc="upper center", ncol=len(handles), frameon=False)
    return fig


def write_png(profile: Profile, path: Path) -> None:
    import matplotlib.pyplot as plt

    fig = _figure(profile)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def svg_chart(profile: Profile) -> str:
    """The chart as one SVG document (what the dashboard shows of an incident)."""
    import matplotlib.pyplot as plt

    with _PLOTTING:
        fig = _figure(profile)
        out = io.StringIO()
        fig.savefig(out, format="svg")
        plt.close(fig)
    return out.getvalue()


def write_html(profile: Profile, path: Path, *, title: str) -> None:
    """One self-contained page: the chart as inline SVG and the tables."""
    import matplotlib.pyplot as plt

    fig = _figure(profile)
    svg = io.StringIO()
    fig.savefig(svg, format="svg")
    plt.close(fig)
    rows = "".join(
        f"<tr><td>{c.name}</td><td>{html.escape(c.label)}</td><td>{c.component}</td>"
        f"<td>{duration(profile.stamps[c.name] - profile.t00)}</td></tr>"
        for c in sorted(
            (c for c in CHECKPOINTS if c.name in profile.stamps),
            key=lambda c: profile.stamps[c.name],
        )
    )
    goals = "".join(
        f"<h2>{html.escape(g.label)}: {duration(g.total)}</h2><table>"
        "<tr><th>component</th><th>time cost</th><th>percentage</th></tr>"
        + "".join(
            f"<tr><td>{c}</td><td>{duration(t)}</td><td>{share * 100:.0f} %</td></tr>"
            for c, t, share in g.components()
        )
        + "</table>"
        for g in profile.goals
    )
    svg_body = svg.getvalue()
    svg_body = svg_body[svg_body.find("<svg") :]
    path.write_text(
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)}</title><style>"
        "body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:2px 8px;text-align:left}</style></head><body>"
        f"<h1>{html.escape(title)}</h1>{svg_body}"
        f"<h2>checkpoints</h2><table><tr><th></th><th>checkpoint</th><th>by</th>"
        f"<th>since T00</th></tr>{rows}</table>{goals}</body></html>",
        encoding="utf-8",
    )

"""A fault's profile: its checkpoints, their causal order, and the cost of each component.

The checkpoints are OPNFV Doctor's (T00 to T09) plus the recovery's (R1 to R3) and a
verdict mark (V) between T01 and T02, where medevac's monitor confirms a suspicion.
Doctor's chain is sequential; medevac's is not: the alarms go out (T06 to T09) while
the cloud's state is corrected (T03 to T05) and the host is fenced (R1). So each
checkpoint names the checkpoints it waits for, and a component's cost is its share of
the *critical path* to a goal: walking back from the goal, always through the latest
predecessor. The segments of that path add up to the goal's total, exactly.

Pure functions over timestamps (wall clock, seconds); rendering lives in ``render``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from medevac.checkpoints import Mark


@dataclass(frozen=True)
class Checkpoint:
    name: str
    label: str
    component: str  # whose work ends at this checkpoint
    after: tuple[str, ...]  # what must have happened first


CHECKPOINTS: tuple[Checkpoint, ...] = (
    Checkpoint(Mark.T00, "fault occurred", "", ()),
    Checkpoint(Mark.T01, "raw failure received", "monitor", (Mark.T00,)),
    Checkpoint(Mark.V, "verdict (suspicion confirmed)", "monitor", (Mark.T01,)),
    Checkpoint(Mark.T02, "affected resources found", "inspector", (Mark.V,)),
    Checkpoint(Mark.T06, "event emitted", "inspector", (Mark.T02,)),
    Checkpoint(Mark.T07, "alarm evaluated", "notifier", (Mark.T06,)),
    Checkpoint(Mark.T08, "alarm fired", "notifier", (Mark.T07,)),
    Checkpoint(Mark.T09, "alarm received", "consumer", (Mark.T08,)),
    Checkpoint(Mark.T03, "host marked down", "controller", (Mark.T02,)),
    Checkpoint(Mark.T04, "servers set to error", "controller", (Mark.T03,)),
    Checkpoint(Mark.T05, "ports set DOWN", "controller", (Mark.T03,)),
    Checkpoint(Mark.R1, "fencing confirmed", "recovery", (Mark.T02,)),
    # An evacuation waits for the inspector's actions on its own server and ports only,
    # not for every server's (T04, T05): the first one may well start before those end.
    Checkpoint(Mark.R2, "first evacuation requested", "recovery", (Mark.R1, Mark.T03)),
    Checkpoint(Mark.R3, "all servers recovered", "controller", (Mark.R2,)),
)
BY_NAME = {c.name: c for c in CHECKPOINTS}
COMPONENTS = ("monitor", "inspector", "controller", "notifier", "consumer", "recovery")
# What an operator asks of a fault: when were the consumers told, when was the cloud
# truthful, when were the servers running again.
GOALS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("notification", "fault to alarm received", (Mark.T09,)),
    ("correction", "fault to cloud state corrected", (Mark.T04, Mark.T05)),
    ("recovery", "fault to all servers recovered", (Mark.R3,)),
)


@dataclass(frozen=True)
class Segment:
    start: str
    end: str
    component: str
    seconds: float


@dataclass
class Goal:
    name: str
    label: str
    end: str
    total: float
    path: list[Segment]

    def components(self) -> list[tuple[str, float, float]]:
        """(component, seconds, share of the total), costliest first."""
        cost: dict[str, float] = {}
        for s in self.path:
            cost[s.component] = cost.get(s.component, 0.0) + s.seconds
        rows = [(c, t, t / self.total if self.total > 0 else 0.0) for c, t in cost.items()]
        return sorted(rows, key=lambda r: r[1], reverse=True)


@dataclass
class Profile:
    stamps: dict[str, float]  # checkpoint -> wall clock
    t00_source: str  # "injected", "estimated" or "first signal"
    goals: list[Goal] = field(default_factory=list)

    @property
    def t00(self) -> float:
        return self.stamps[Mark.T00]

    def offset(self, name: str) -> float | None:
        at = self.stamps.get(name)
        return None if at is None else at - self.t00

    def missing(self) -> list[str]:
        return [c.name for c in CHECKPOINTS if c.name not in self.stamps]

    def violations(self) -> list[str]:
        """Every checkpoint that came before one it waits for (never, when clocks agree)."""
        bad = []
        for c in CHECKPOINTS:
            at = self.stamps.get(c.name)
            if at is None:
                continue
            for p in c.after:
                before = self.stamps.get(p)
                if before is not None and before > at:
                    bad.append(f"{c.name} ({c.label}) came {before - at:.3f} s before {p}")
        return bad

    def as_dict(self) -> dict[str, Any]:
        return {
            "t00": self.t00,
            "t00_source": self.t00_source,
            "checkpoints": [
                {
                    "name": c.name,
                    "label": c.label,
                    "component": c.component,
                    "at": self.stamps.get(c.name),
                    "offset_s": self.offset(c.name),
                }
                for c in CHECKPOINTS
            ],
            "goals": [
                {
                    "name": g.name,
                    "label": g.label,
                    "end": g.end,
                    "total_s": g.total,
                    "path": [s.__dict__ for s in g.path],
                    "components": [
                        {"component": c, "seconds": t, "share": share}
                        for c, t, share in g.components()
                    ],
                }
                for g in self.goals
            ],
            "missing": self.missing(),
            "violations": self.violations(),
        }


def recorded_before(stamps: dict[str, float], name: str) -> set[str]:
    """The nearest recorded checkpoints ``name`` waits for, through unrecorded ones
    (level 1 has no fencing, R1; a profile read mid-fault lacks its later marks)."""
    found: set[str] = set()
    for p in BY_NAME[name].after:
        found |= {p} if p in stamps else recorded_before(stamps, p)
    return found


def waited_for(stamps: dict[str, float], name: str) -> str:
    """The recorded checkpoint ``name`` waited for last (T00 when none is recorded)."""
    before = recorded_before(stamps, name)
    return max(before, key=lambda p: stamps[p]) if before else Mark.T00


def critical_path(stamps: dict[str, float], end: str) -> list[Segment]:
    """From ``end`` back to T00, always through the latest recorded predecessor."""
    path: list[Segment] = []
    node = end
    while node != Mark.T00:
        prev = waited_for(stamps, node)
        path.append(Segment(prev, node, BY_NAME[node].component, stamps[node] - stamps[prev]))
        node = prev
    path.reverse()
    return path


def build(
    stamps: dict[str, float], *, fault_at: float | None = None, t00_estimate: float | None = None
) -> Profile:
    """A profile from recorded checkpoints. T00 is the injected fault time when known,
    else the monitor's estimate, else the first signal (then detection costs nothing)."""
    known = {k: float(v) for k, v in stamps.items() if k in BY_NAME and v is not None}
    if fault_at is not None:
        known[Mark.T00], source = float(fault_at), "injected"
    elif t00_estimate is not None:
        known[Mark.T00], source = float(t00_estimate), "estimated"
    elif Mark.T00 in known:
        source = "recorded"
    elif Mark.T01 in known:
        known[Mark.T00], source = known[Mark.T01], "first signal"
    else:
        raise ValueError("no checkpoint to start the profile from")
    profile = Profile(known, source)
    for name, label, ends in GOALS:
        present = [e for e in ends if e in known]
        if not present:
            continue
        end = max(present, key=lambda e: known[e])
        path = critical_path(known, end)
        profile.goals.append(Goal(name, label, end, known[end] - known[Mark.T00], path))
    return profile


def recovery_stamps(recovery: dict[str, Any] | None) -> dict[str, float]:
    """R1 to R3 from a recovery record (``RecoveryStore.get``)."""
    if not recovery:
        return {}
    out: dict[str, float] = {}
    fenced = (recovery.get("detail") or {}).get("fenced_at")
    if fenced is not None:
        out[Mark.R1] = float(fenced)
    evacs = recovery.get("evacuations") or []
    starts = [e["started_at"] for e in evacs if e.get("started_at") is not None]
    if starts:
        out[Mark.R2] = min(starts)
    ends = [e["ended_at"] for e in evacs if e.get("ended_at") is not None]
    if recovery.get("state") == "COMPLETED" and ends and len(ends) == len(evacs):
        out[Mark.R3] = max(ends)
    return out


def incident_profile(
    incident: dict[str, Any], recovery: dict[str, Any] | None, *, fault_at: float | None = None
) -> Profile:
    stamps = dict(incident.get("stamps") or {})
    estimate = stamps.pop(Mark.T00_ESTIMATE, None)
    stamps.update(recovery_stamps(recovery))
    return build(stamps, fault_at=fault_at, t00_estimate=estimate)


def from_api(body: dict[str, Any]) -> Profile:
    """The profile again from its API form (``Profile.as_dict``), for rendering."""
    stamps = {c["name"]: c["at"] for c in body["checkpoints"] if c["at"] is not None}
    profile = build(stamps, fault_at=body["t00"])
    profile.t00_source = body["t00_source"]
    return profile

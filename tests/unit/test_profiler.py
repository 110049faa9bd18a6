"""The profile's arithmetic: critical paths, component shares, gaps and disorder."""

from __future__ import annotations

from pathlib import Path

import pytest
from rich.console import Console

from medevac.profiler.profile import (
    CHECKPOINTS,
    build,
    critical_path,
    from_api,
    incident_profile,
    recovery_stamps,
)
from medevac.profiler.render import print_profile, write_html, write_png

# A level-2 host crash as medevac runs it: alarms go out before the state actions.
STAMPS = {
    "T00": 100.000,
    "T01": 100.240,
    "V": 100.260,
    "T02": 100.261,
    "T06": 100.262,
    "T07": 100.263,
    "T08": 100.270,
    "T09": 100.275,
    "T03": 100.330,
    "T04": 100.520,
    "T05": 100.610,
    "R1": 100.900,
    "R2": 101.000,
    "R3": 109.000,
}


def test_each_goal_follows_the_latest_predecessor_and_adds_up() -> None:
    p = build(STAMPS)
    goals = {g.name: g for g in p.goals}
    assert [s.end for s in goals["notification"].path] == [
        "T01",
        "V",
        "T02",
        "T06",
        "T07",
        "T08",
        "T09",
    ]
    assert [s.end for s in goals["correction"].path] == ["T01", "V", "T02", "T03", "T05"]
    # R2 waits for fencing (R1, the latest) and for the host marked down.
    assert [s.end for s in goals["recovery"].path] == ["T01", "V", "T02", "R1", "R2", "R3"]
    for g in p.goals:
        assert sum(s.seconds for s in g.path) == pytest.approx(g.total)
        assert sum(t for _, t, _ in g.components()) == pytest.approx(g.total)
        assert sum(share for _, _, share in g.components()) == pytest.approx(1.0)
    costs = dict((c, t) for c, t, _ in goals["notification"].components())
    assert costs["monitor"] == pytest.approx(0.260)
    assert costs["consumer"] == pytest.approx(0.005)
    assert goals["recovery"].components()[0][0] == "controller"  # Nova's rebuilds: 8 s
    assert p.missing() == [] and p.violations() == []


def test_t00_is_the_injection_when_known_else_the_estimate_else_the_first_signal() -> None:
    no_t00 = {k: v for k, v in STAMPS.items() if k != "T00"}
    assert build(no_t00, fault_at=99.9).t00_source == "injected"
    assert build(no_t00, fault_at=99.9).t00 == 99.9
    estimated = build(no_t00, t00_estimate=100.1)
    assert (estimated.t00, estimated.t00_source) == (100.1, "estimated")
    first = build(no_t00)
    assert (first.t00, first.t00_source) == (100.240, "first signal")
    with pytest.raises(ValueError):
        build({})


def test_unrecorded_checkpoints_are_skipped_not_charged_to_the_start() -> None:
    # Level 1 never fences: R2 waits on the host marked down instead.
    unfenced = {k: v for k, v in STAMPS.items() if k != "R1"}
    path = critical_path(unfenced, "R2")
    assert [s.start for s in path][-1] == "T03"
    # A profile read mid-fault: T08 unknown, T09 hangs on T07.
    path = critical_path({k: v for k, v in STAMPS.items() if k != "T08"}, "T09")
    assert (path[-1].start, path[-1].end) == ("T07", "T09")


def test_a_checkpoint_before_one_it_waits_for_is_reported() -> None:
    bad = {**STAMPS, "T09": 100.265}  # received before it was fired
    assert build(bad).violations() == ["T09 (alarm received) came 0.005 s before T08"]
    # The first server's evacuation may start while other servers are still being reset.
    early = {**STAMPS, "R1": 100.400, "R2": 100.450}
    assert build(early).violations() == []
    assert build({**early, "R2": 100.300}).violations() == [
        "R2 (first evacuation requested) came 0.100 s before R1",
        "R2 (first evacuation requested) came 0.030 s before T03",
    ]


def test_recovery_marks_come_from_the_recovery_record() -> None:
    rec = {
        "state": "COMPLETED",
        "detail": {"fenced_at": 5.0},
        "evacuations": [
            {"started_at": 6.0, "ended_at": 9.0},
            {"started_at": 6.5, "ended_at": 8.0},
        ],
    }
    assert recovery_stamps(rec) == {"R1": 5.0, "R2": 6.0, "R3": 9.0}
    running = {**rec, "state": "EVACUATING"}
    assert "R3" not in recovery_stamps(running)
    incident = {"stamps": {"T00~": 1.0, "T01": 2.0, "V": 2.1, "T02": 2.2}}
    p = incident_profile(incident, rec)
    assert (p.t00, p.t00_source) == (1.0, "estimated")
    assert p.offset("R3") == pytest.approx(8.0)


def test_the_api_form_renders_again_as_the_same_profile(tmp_path: Path) -> None:
    p = build(STAMPS)
    again = from_api(p.as_dict())
    assert again.stamps == p.stamps
    assert [g.total for g in again.goals] == [g.total for g in p.goals]
    console = Console(record=True, width=120)
    print_profile(again, console, incident="abc")
    text = console.export_text()
    for c in CHECKPOINTS:
        assert c.label in text
    assert "fault to alarm received: 275 ms" in text
    write_png(again, tmp_path / "p.png")
    write_html(again, tmp_path / "p.html", title="t")
    assert (tmp_path / "p.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    page = (tmp_path / "p.html").read_text()
    assert "<svg" in page and "fault to all servers recovered" in page


def test_a_profile_goes_out_as_otlp_spans_once() -> None:
    from medevac.profiler.tracing import SpanExport
    from tests.otlp import OtlpReceiver

    with OtlpReceiver() as collector:
        spans = SpanExport.from_settings("otlp", collector.url, "medevac-test")
        assert spans is not None
        attrs = {"medevac.incident_id": "inc-1", "medevac.host": "host1"}
        assert spans.export(build(STAMPS), attrs)
        assert not spans.export(build(STAMPS), attrs)  # once per incident
        spans.close()
    got = {s["name"]: s for s in collector.spans}
    root = got["medevac.fault"]
    assert root["service"] == "medevac-test"
    assert root["attributes"]["medevac.incident_id"] == "inc-1"
    assert (root["start"], root["end"]) == pytest.approx((100.0, 109.0))
    assert root["attributes"]["medevac.recovery_s"] == pytest.approx(9.0)
    children = [s for s in collector.spans if s["parent"] == root["span_id"]]
    assert len(children) == len(CHECKPOINTS) - 1 == len(collector.spans) - 1
    r2 = got["R2 first evacuation requested"]
    assert r2["attributes"]["medevac.after"] == "R1"  # what it waited for last
    assert (r2["start"], r2["end"]) == pytest.approx((100.900, 101.0))
    assert all(s["trace_id"] == root["trace_id"] for s in collector.spans)

"""The notifier's evaluation: a bad event costs only its own alarms."""

from __future__ import annotations

from typing import Any

from medevac.notifier.alarms import Alarm, AlarmSpec
from medevac.notifier.events import INSTANCE_UPDATE, Event
from medevac.notifier.notifier import Notifier


class Outbox:
    """Records each batch the notifier hands over; sends nothing."""

    on_checkpoint = None

    def __init__(self) -> None:
        self.batches: list[list[str]] = []  # the alarm (named after its server) of each delivery

    def submit(self, states: Any, changes: Any, deliveries: list[Any]) -> None:
        self.batches.append([d.payload["alarm_name"] for d in deliveries])


class Channel:
    def __init__(self) -> None:
        self.events: list[str] = []

    def publish(self, events: list[Event]) -> None:
        self.events.extend(e.traits["instance_id"] for e in events)


def failure(server: str, at: float = 0.0) -> Event:
    return Event(INSTANCE_UPDATE, at, {"instance_id": server, "project_id": "p1"})


def test_one_bad_event_does_not_stop_the_others() -> None:
    outbox, channel = Outbox(), Channel()
    n = Notifier(store=None, outbox=outbox, channels=[channel])  # type: ignore[arg-type]
    for s in ("s1", "s2", "s3"):
        spec = AlarmSpec.model_validate(
            {
                "name": s,
                "alarm_actions": ["http://consumer.example/failure"],
                "event_rule": {
                    "event_type": INSTANCE_UPDATE,
                    "query": [{"field": "traits.instance_id", "op": "eq", "value": s}],
                },
            }
        )
        n.index.put(Alarm.new(spec, "p1", 0.0))
    # Its time cannot be written as Aodh's timestamp: building its payload raises.
    bad = failure("s2", at=float("nan"))
    assert n.emit([failure("s1"), bad, failure("s3")]) == 2
    assert outbox.batches == [["s1", "s3"]]
    assert channel.events == ["s1", "s2", "s3"]  # the other channels still get every event

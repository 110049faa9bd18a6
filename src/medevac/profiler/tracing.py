"""A fault's profile as OpenTelemetry spans, for whatever tracing backend an operator runs.

Exported once the fault is over (its recovery ended, or the incident closed), from the
recorded checkpoints: one root span from T00 to the last checkpoint, and a child span
per checkpoint from the checkpoint it waited for, named and attributed with its
component. Recording spans live on the fault path would cost the fault path; the
checkpoints are already there, with their exact times.
"""

from __future__ import annotations

import logging
from typing import Any

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SpanExporter,
)

from medevac.checkpoints import Mark
from medevac.profiler.profile import CHECKPOINTS, Profile, waited_for

log = logging.getLogger(__name__)


def _ns(seconds: float) -> int:
    return int(seconds * 1e9)


class SpanExport:
    def __init__(self, exporter: SpanExporter, service_name: str = "medevac") -> None:
        self.provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
        self.provider.add_span_processor(BatchSpanProcessor(exporter, schedule_delay_millis=500))
        self.tracer = self.provider.get_tracer("medevac.profiler")
        self.exported: set[str] = set()  # incidents already sent by this process

    @classmethod
    def from_settings(cls, kind: str, endpoint: str, service_name: str) -> SpanExport | None:
        if kind == "none":
            return None
        if kind == "console":
            return cls(ConsoleSpanExporter(), service_name)
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        return cls(OTLPSpanExporter(endpoint=endpoint, timeout=5), service_name)

    def export(self, profile: Profile, attributes: dict[str, Any]) -> bool:
        """Queue the profile's spans (sent in the background); once per incident."""
        key = str(attributes.get("medevac.incident_id", ""))
        if key in self.exported:
            return False
        self.exported.add(key)
        from opentelemetry import trace

        end = max(profile.stamps.values())
        root = self.tracer.start_span(
            "medevac.fault",
            start_time=_ns(profile.t00),
            attributes={**attributes, "medevac.t00_source": profile.t00_source},
        )
        context = trace.set_span_in_context(root)
        for c in CHECKPOINTS:
            at = profile.stamps.get(c.name)
            if at is None or c.name == Mark.T00:
                continue
            prev = waited_for(profile.stamps, c.name)
            span = self.tracer.start_span(
                f"{c.name} {c.label}",
                context=context,
                start_time=_ns(profile.stamps[prev]),
                attributes={
                    "medevac.checkpoint": c.name,
                    "medevac.component": c.component,
                    "medevac.after": prev,
                },
            )
            span.end(end_time=_ns(at))
        for goal in profile.goals:
            root.set_attribute(f"medevac.{goal.name}_s", goal.total)
        root.end(end_time=_ns(end))
        return True

    def close(self) -> None:
        self.provider.shutdown()  # flushes what is queued

"""Masakari notifications as raw faults: what masakari-monitors report, read as medevac's
own inputs (the same ``FaultSink`` as Doctor's and Alertmanager's).

Pure: ``read_notification`` says which fault a notification reports, or why none
(Masakari's own no-ops: a host or process STARTED, a VM event its engine ignores),
and whether Masakari would put the host on maintenance for it.

- ``COMPUTE_HOST`` STOPPED: the host is suspect, and confirmed by medevac's probes
  and its BMC like any report; its ``host_status`` decides nothing (Masakari acts only
  on ``NORMAL``, trusting the monitor's fencing; medevac fences itself).
- ``PROCESS`` STOPPED of ``nova-compute``: a compute-process-down report.
- ``VM`` (LIFECYCLE or QEMU_GUEST_AGENT_ERROR with STOPPED_FAILED, IO_ERROR with
  IO_ERROR_REPORT): a server-down report for that server.
"""

from __future__ import annotations

import posixpath
from collections.abc import Mapping
from dataclasses import dataclass

from medevac.monitor.raw import RawFault, RawFaultKind

MASAKARI_SOURCE = "masakari"
COMPUTE_PROCESS = "nova-compute"

# (event, vir_domain_event) Masakari's instance flow acts on (engine/instance_events.py).
VM_EVENTS_ACTED_ON = frozenset(
    {
        ("LIFECYCLE", "STOPPED_FAILED"),
        ("QEMU_GUEST_AGENT_ERROR", "STOPPED_FAILED"),
        ("IO_ERROR", "IO_ERROR_REPORT"),
    }
)


@dataclass(frozen=True, slots=True)
class Reading:
    """What a notification asks of medevac: a fault to submit, or a reason for none
    (``finished``: Masakari counts it done, a no-op; else it ignores it)."""

    fault: RawFault | None
    reason: str | None = None
    finished: bool = False
    maintenance: bool = False  # the host goes on maintenance once the fault is taken


def read_notification(
    notification_id: str,
    type: str,
    hostname: str,
    payload: Mapping[str, str],
    *,
    generated_at: float,
    received_at: float,
) -> Reading:
    """The fault a validated notification reports (see the module's docstring)."""
    event = payload.get("event", "")

    def fault(kind: RawFaultKind, **details: str) -> RawFault:
        return RawFault(
            source=MASAKARI_SOURCE,
            kind=kind,
            host=hostname,
            observed_at=generated_at,
            received_at=received_at,
            key=f"{MASAKARI_SOURCE}:{notification_id}",
            details={"notification_uuid": notification_id, "type": type, **payload, **details},
        )

    if type == "COMPUTE_HOST":
        if event == "STOPPED":
            return Reading(fault(RawFaultKind.HOST_DOWN), maintenance=True)
        return Reading(
            None,
            "a host is back only when its own agent's heartbeats are, and stays forced "
            "down until released: STARTED changes nothing",
            finished=True,
        )
    if type == "PROCESS":
        # The monitors send the last part of the configured path: a name, maybe with
        # arguments ("nova-compute --config-file ...").
        words = payload.get("process_name", "").split()
        process = posixpath.basename(words[0]) if words else ""
        if event != "STOPPED":
            return Reading(None, f"{process} started: nothing to do", finished=True)
        if process != COMPUTE_PROCESS:
            return Reading(None, f"medevac acts on {COMPUTE_PROCESS} only, not on {process}")
        return Reading(fault(RawFaultKind.COMPUTE_PROCESS_DOWN), maintenance=True)
    server = payload.get("instance_uuid", "")
    if (event, payload.get("vir_domain_event", "")) not in VM_EVENTS_ACTED_ON:
        return Reading(
            None,
            f"event {event} {payload.get('vir_domain_event')} of a server needs no recovery "
            "(as in Masakari)",
        )
    return Reading(fault(RawFaultKind.SERVER_DOWN, server_id=server))

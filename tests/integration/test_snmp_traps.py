"""SNMPv2c traps on the wire: sent over UDP, read by pysnmp and by Net-SNMP's snmptrapd."""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from pyasn1.codec.ber import decoder
from pysnmp.proto import api

from medevac.notifier.events import Event
from medevac.notifier.snmp import SnmpTraps, TrapManager, parse_oid
from tests.conftest import free_port, wait_for

BASE = parse_oid("1.3.6.1.3.7446")


def receive(sock: socket.socket, expected: int) -> list[dict[str, Any]]:
    """Decode every trap that arrives (a real SNMP manager's side)."""
    traps = []
    sock.settimeout(2)
    while len(traps) < expected:
        data, _ = sock.recvfrom(65535)
        version = api.decodeMessageVersion(data)
        module = api.PROTOCOL_MODULES[version]
        message, _ = decoder.decode(data, asn1Spec=module.Message())
        pdu = module.apiMessage.get_pdu(message)
        traps.append(
            {
                "version": int(version),
                "community": str(module.apiMessage.get_community(message)),
                "varbinds": {
                    str(oid): str(value) for oid, value in module.apiTrapPDU.get_varbinds(pdu)
                },
            }
        )
    return traps


def udp_bound(port: int) -> bool:
    """Whether some process has a UDP socket bound to 127.0.0.1:port (read from the kernel)."""
    local = f"0100007F:{port:04X}"
    with open("/proc/net/udp") as table:
        return any(line.split()[1] == local for line in list(table)[1:])


def send(events: list[Event], manager: TrapManager) -> None:
    async def go() -> None:
        traps = SnmpTraps([manager], BASE)
        await traps.start()
        traps.publish(events)
        await asyncio.sleep(0.2)
        traps.close()
        assert traps.stats()["sent"] == sum(1 for e in events if manager.wants(e.event_type))

    asyncio.run(go())


def test_host_down_trap_carries_its_event() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        down = Event("compute.host.down", time.time(), {"host": "compute7", "zone": "z1"})
        send([down], TrapManager("127.0.0.1", port, "s3cret-community", ("compute.host.*",)))
        (trap,) = receive(sock, 1)
    assert trap["version"] == api.SNMP_VERSION_2C
    assert trap["community"] == "s3cret-community"
    vb = trap["varbinds"]
    assert vb["1.3.6.1.6.3.1.1.4.1.0"] == "1.3.6.1.3.7446.0.1"  # compute.host.down
    assert vb["1.3.6.1.3.7446.1.1"] == "compute.host.down"
    assert vb["1.3.6.1.3.7446.1.2"] == down.message_id
    assert vb["1.3.6.1.3.7446.1.5"] == "compute7"
    assert '"zone": "z1"' in vb["1.3.6.1.3.7446.1.9"]


def test_managers_get_only_the_event_types_they_asked_for() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        events = [
            Event("compute.instance.update", time.time(), {"instance_id": "s1", "state": "error"}),
            Event("medevac.guard.hold", time.time(), {"zone": "z1"}, severity="critical"),
        ]
        send(events, TrapManager("127.0.0.1", port, "c", ("compute.host.*", "medevac.*")))
        (trap,) = receive(sock, 1)
        sock.settimeout(0.3)
        try:
            extra = sock.recvfrom(65535)
        except TimeoutError:
            extra = None
    assert trap["varbinds"]["1.3.6.1.3.7446.1.1"] == "medevac.guard.hold"
    assert trap["varbinds"]["1.3.6.1.3.7446.1.4"] == "critical"
    assert extra is None


def test_bad_oids_are_refused() -> None:
    for bad in ("", "1", "1.x.3", "1.-2.3"):
        try:
            parse_oid(bad)
        except ValueError:
            continue
        raise AssertionError(f"{bad!r} accepted")


def test_net_snmp_trap_daemon_reads_our_traps(tmp_path: Path) -> None:
    """An independent implementation (Debian's snmptrapd) decodes what we send."""
    daemon = shutil.which("snmptrapd") or "/usr/sbin/snmptrapd"
    if not Path(daemon).exists():
        pytest.fail("snmptrapd is missing; `make deps` installs it")
    conf, log = tmp_path / "snmptrapd.conf", tmp_path / "traps.log"
    conf.write_text("disableAuthorization yes\n")
    port = free_port()
    proc = subprocess.Popen(
        [
            daemon,
            "-f",
            "-C",
            "-c",
            str(conf),
            "-m",
            "",
            "-On",
            "-Lf",
            str(log),
            f"udp:127.0.0.1:{port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        # Its log file opens before its socket binds; a trap sent in between would be lost.
        wait_for("snmptrapd to bind its UDP port", lambda: udp_bound(port), 10)
        down = Event("compute.host.down", time.time(), {"host": "compute9"})
        send([down], TrapManager("127.0.0.1", port, "public", ("compute.host.*",)))

        def logged() -> str | None:
            text = log.read_text()
            return text if "compute9" in text else None

        text = wait_for("the trap in snmptrapd's log", logged, 10)
    finally:
        proc.terminate()
        proc.wait(10)
    assert ".1.3.6.1.6.3.1.1.4.1.0 = OID: .1.3.6.1.3.7446.0.1" in text
    assert '.1.3.6.1.3.7446.1.1 = STRING: "compute.host.down"' in text

"""The lab's controller-partition fault: the rules it builds, and (where the machine
allows it: root, cgroup v2, iptables) a real cut of a real process off Redis."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from medevac.lab import partition
from medevac.lab.controller_faults import cut_ports
from medevac.lab.faults import FaultError, FaultKind
from medevac.lab.partition import CutPorts, Partition, cut_rules, held_rules

OPEN = ["-d", "127.0.0.1", "--dport", "6379"]
TAIL = ["-m", "comment", "--comment", "medevac-lab-x/ctl-2", "-j", "DROP"]


def test_cut_rules_drop_its_backend_and_peers_by_cgroup_and_what_reaches_it_by_port() -> None:
    ports = CutPorts(
        api=8001,
        heartbeat=9001,
        coordination=6379,
        peers=(8002, 8003),
        established=(("127.0.0.1", 40000, "127.0.0.1", 6379),),
    )
    rules = cut_rules("medevac-lab-x/ctl-2", "medevac-lab-x-ctl-2", ports)
    cgroup = ["OUTPUT", "-m", "cgroup", "--path", "medevac-lab-x-ctl-2", "-p", "tcp", "--dport"]
    assert rules == [
        [*cgroup, "6379", *TAIL],
        [*cgroup, "8002", *TAIL],
        [*cgroup, "8003", *TAIL],
        ["OUTPUT", "-p", "tcp", "-s", "127.0.0.1", "--sport", "40000", *OPEN, *TAIL],
        ["OUTPUT", "-o", "lo", "-p", "udp", "--dport", "9001", *TAIL],
        ["OUTPUT", "-o", "lo", "-p", "udp", "--sport", "9001", *TAIL],
        ["OUTPUT", "-o", "lo", "-p", "tcp", "--dport", "8001", *TAIL],
    ]
    assert held_rules("c", []) == []
    # The store, Nova, the BMCs and the consumers are never named: they stay reachable.
    named = {r[r.index("--dport") + 1] for r in rules if "--dport" in r}
    assert named == {"6379", "8002", "8003", "9001", "8001"}


def test_the_cut_s_ports_come_from_what_lab_up_wrote(tmp_path: Path) -> None:
    configs = []
    for i, (api, hb) in enumerate(((7001, 9101), (7002, 9102), (7003, 9103)), start=1):
        path = tmp_path / f"medevac-{i}.toml"
        path.write_text(
            f"[api]\nport = {api}\n[monitor]\nlisten_port = {hb}\n"
            '[cluster]\ncoordination_url = "redis://127.0.0.1:6380"\n'
        )
        configs.append(
            {"member_id": f"ctl-{i}", "url": f"http://127.0.0.1:{api}", "config": str(path)}
        )
    assert cut_ports(configs, "ctl-2") == CutPorts(7002, 9102, 6380, (7001, 7003))
    assert FaultKind.CONTROLLER_PARTITION.targets_controller
    # Each lab its own tag: one lab's heal or `down` never touches another's rules.
    assert partition.lab_tag(tmp_path / "a") != partition.lab_tag(tmp_path / "b")
    assert partition.lab_tag(tmp_path / "a") == partition.lab_tag(tmp_path / "a" / ".")


def _can_cut() -> bool:
    return (
        os.geteuid() == 0
        and partition.cgroup2_root() is not None
        and bool(shutil.which("iptables"))
    )


PINGER = """
import socket, sys
s = socket.create_connection(("127.0.0.1", 6379), timeout=1)
print("ready", flush=True)
for line in sys.stdin:
    try:
        if s is None:
            s = socket.create_connection(("127.0.0.1", 6379), timeout=1)
        s.sendall(b"PING\\r\\n")
        print(s.recv(64).decode().strip(), flush=True)
    except OSError as exc:
        print(type(exc).__name__, flush=True)
        s = None  # a new connection next time
"""


def _ask(proc: subprocess.Popen[str]) -> str:
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write("ping\n")
    proc.stdin.flush()
    return proc.stdout.readline().strip()


def _redis_answers() -> bool:
    with socket.create_connection(("127.0.0.1", 6379), timeout=2) as s:
        s.sendall(b"PING\r\n")
        return s.recv(64).startswith(b"+PONG")


def test_a_process_cut_off_gets_no_answer_from_redis_and_healed_leaves_nothing() -> None:
    """A process with a Redis connection open is cut off (its connection open before
    the cut too) while this one still gets answers; healed, it gets answers again and
    no rule nor cgroup is left. Where the machine cannot, the fault says why (501)."""
    tag = f"medevac-lab-test{os.getpid()}"
    ports = CutPorts(api=1, heartbeat=1, coordination=6379, peers=())
    proc = subprocess.Popen(
        [sys.executable, "-c", PINGER], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        if not _can_cut():
            with pytest.raises(FaultError) as refused:
                Partition.cut(tag, "ctl-1", proc.pid, ports)
            assert refused.value.status == 501 and "controller-partition needs" in str(
                refused.value
            )
            return
        assert _ask(proc) == "+PONG"
        cut = Partition.cut(tag, "ctl-1", proc.pid, ports)
        try:
            assert any("--sport" in r and "6379" in r for r in cut.rules), cut.rules
            assert _ask(proc) == "TimeoutError"  # the open connection: cut
            assert _ask(proc) != "+PONG"  # a new one, made in the cgroup: cut
            assert _redis_answers()  # everyone else: not cut
            assert partition.leftovers(tag) != ([], [])
        finally:
            cut.heal()
        assert partition.leftovers(tag) == ([], [])
        assert _ask(proc) in ("+PONG", "TimeoutError")  # the old socket may be stuck
        assert _ask(proc) == "+PONG"
    finally:
        proc.kill()
        proc.wait()
        partition.clean(tag)


def test_what_a_crashed_lab_left_is_removed_by_the_next_clean() -> None:
    """A cut whose lab died without healing it (no Partition object left): clean()
    finds its rules by their tag and its cgroup by name, and moves the process out."""
    tag = f"medevac-lab-crash{os.getpid()}"
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        if not _can_cut():
            assert partition.clean(tag) == 0  # nothing could have been left
            return
        ports = CutPorts(api=1, heartbeat=2, coordination=6379, peers=(3,))
        Partition.cut(tag, "ctl-2", proc.pid, ports)  # and forgotten, as in a crash
        rules, cgroups = partition.leftovers(tag)
        assert len(rules) == 5 and len(cgroups) == 1, (rules, cgroups)
        assert partition.clean(tag) == 6
        assert partition.leftovers(tag) == ([], [])
        assert proc.poll() is None and partition.cgroup_of(proc.pid) == "/"
    finally:
        proc.kill()
        proc.wait()
        partition.clean(tag)

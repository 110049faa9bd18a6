"""A lab controller cut off by the kernel: its own cgroup v2 and iptables rules.

The cut: the controller's process moves into a cgroup of its own, and OUTPUT rules
drop what it sends to the coordination backend and to its peers' APIs (matched by
that cgroup), what it already had open to them (a socket keeps the cgroup it was made
in, so those are matched by their ports), and what reaches it: the agents'
heartbeats and the peers' questions (matched by its ports on loopback). Its path to
the store, Nova, Neutron, the BMCs and the consumers stays open: the epochs and the
lease, not the cut, must keep it from acting.

Every rule carries a comment naming the lab (``lab_tag``), so a heal, `lab down` and
the next `lab up` after a crash remove exactly the lab's rules and cgroups.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shlex
import shutil
import socket
import struct
import subprocess
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from medevac.lab.faults import FaultError

IPTABLES_WAIT = "5"  # seconds to wait for the xtables lock another tool holds


def lab_tag(root: Path) -> str:
    """The comment on every rule of the lab in ``root``, and its cgroups' prefix."""
    return "medevac-lab-" + hashlib.sha256(str(root.resolve()).encode()).hexdigest()[:10]


@dataclass(frozen=True)
class CutPorts:
    """What the cut drops: ``api`` and ``heartbeat`` are the controller's own ports,
    ``coordination`` the backend's, ``peers`` the other controllers' API ports;
    ``established``: its TCP connections to those open before the cut, as (local
    address, local port, remote address, remote port)."""

    api: int
    heartbeat: int
    coordination: int
    peers: tuple[int, ...]
    established: tuple[tuple[str, int, str, int], ...] = ()


def cut_rules(comment: str, cgroup: str, ports: CutPorts) -> list[list[str]]:
    """The iptables rules (chain first, without the verb) that cut the controller in
    ``cgroup`` (its path below the cgroup v2 root) off as ``ports`` say."""
    tail = ["-m", "comment", "--comment", comment, "-j", "DROP"]
    rules = [
        ["OUTPUT", "-m", "cgroup", "--path", cgroup, "-p", "tcp", "--dport", str(port), *tail]
        for port in (ports.coordination, *ports.peers)
    ]
    rules += held_rules(comment, ports.established)
    rules += [
        # The agents' heartbeats to it, and its probes to them.
        ["OUTPUT", "-o", "lo", "-p", "udp", "--dport", str(ports.heartbeat), *tail],
        ["OUTPUT", "-o", "lo", "-p", "udp", "--sport", str(ports.heartbeat), *tail],
        # The peers' questions (is this host silent?) to its API.
        ["OUTPUT", "-o", "lo", "-p", "tcp", "--dport", str(ports.api), *tail],
    ]
    return rules


def held_rules(comment: str, established: Iterable[tuple[str, int, str, int]]) -> list[list[str]]:
    """The rules that cut connections made before the move to the cgroup (a socket
    keeps the cgroup it was made in): by their addresses and ports."""
    tail = ["-m", "comment", "--comment", comment, "-j", "DROP"]
    return [
        ["OUTPUT", "-p", "tcp", "-s", la, "--sport", str(lp), "-d", ra, "--dport", str(rp), *tail]
        for la, lp, ra, rp in established
    ]


def cgroup2_root() -> Path | None:
    """Where the cgroup v2 hierarchy is mounted (None: it is not)."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/mounts").read_text().splitlines():
            fields = line.split()
            if len(fields) > 2 and fields[2] == "cgroup2":
                return Path(fields[1])
    return None


def _iptables(*args: str) -> subprocess.CompletedProcess[str]:
    tool = shutil.which("iptables") or "iptables"
    return subprocess.run(
        [tool, "-w", IPTABLES_WAIT, *args], capture_output=True, text=True, timeout=30
    )


def require_kernel_cut() -> Path:
    """The cgroup v2 root, once this machine can cut a process off; FaultError 501
    with the reason otherwise."""
    if os.geteuid() != 0:
        raise FaultError(
            501,
            f"controller-partition needs root (cgroups and iptables); the lab runs as uid "
            f"{os.geteuid()}",
        )
    root = cgroup2_root()
    if root is None:
        raise FaultError(501, "controller-partition needs a cgroup v2 hierarchy: none is mounted")
    if shutil.which("iptables") is None:
        raise FaultError(
            501, "controller-partition needs iptables (scripts/install-debian-deps.sh installs it)"
        )
    listed = _iptables("-S", "OUTPUT")
    if listed.returncode != 0:
        raise FaultError(501, f"iptables refused to list its rules: {listed.stderr.strip()}")
    return root


def cgroup_of(pid: int) -> str:
    """The cgroup v2 path of ``pid`` (below the root, with its leading slash)."""
    for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        if line.startswith("0::"):
            return line[3:] or "/"
    return "/"


def _move(pid: int, cgroup_dir: Path) -> None:
    (cgroup_dir / "cgroup.procs").write_text(f"{pid}\n")


def _inet4(hex_addr: str) -> tuple[str, int]:
    addr, port = hex_addr.split(":")
    return socket.inet_ntoa(struct.pack("<I", int(addr, 16))), int(port, 16)


def established(pid: int, remote_ports: set[int]) -> list[tuple[str, int, str, int]]:
    """``pid``'s IPv4 TCP connections to ``remote_ports`` (open or opening)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):
            target = os.readlink(fd)
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    found = []
    for line in Path(f"/proc/{pid}/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        # 01 ESTABLISHED, 02 SYN_SENT: what it would still send on.
        if len(fields) < 10 or fields[3] not in ("01", "02") or fields[9] not in inodes:
            continue
        (la, lp), (ra, rp) = _inet4(fields[1]), _inet4(fields[2])
        if rp in remote_ports:
            found.append((la, lp, ra, rp))
    return sorted(set(found))


@dataclass
class Partition:
    """One controller cut off: its cgroup, where it came from, the rules in place."""

    member_id: str
    pid: int
    cgroup_dir: Path
    home: Path  # the cgroup it was in
    rules: list[list[str]] = field(default_factory=list)

    @classmethod
    def cut(cls, tag: str, member_id: str, pid: int, ports: CutPorts) -> Partition:
        """Move ``pid`` into a cgroup of its own and drop its traffic as ``ports`` say;
        on any failure nothing stays in place (FaultError with the reason)."""
        root = require_kernel_cut()
        name = f"{tag}-{member_id}"
        home = root / cgroup_of(pid).lstrip("/")
        part = cls(member_id, pid, root / name, home)
        try:
            part.cgroup_dir.mkdir(exist_ok=True)
            _move(pid, part.cgroup_dir)
        except OSError as exc:
            part.heal()
            raise FaultError(
                501, f"cannot move {member_id} into a cgroup of its own: {exc}"
            ) from None
        # Rules for new connections first, then for those it already had: one it opens
        # meanwhile is made in the new cgroup, and matched.
        comment = f"{tag}/{member_id}"
        try:
            for rule in cut_rules(comment, name, ports):
                part._add(rule)
            for rule in held_rules(comment, established(pid, {ports.coordination, *ports.peers})):
                part._add(rule)
        except (FaultError, OSError) as exc:
            part.heal()
            if isinstance(exc, FaultError):
                raise
            raise FaultError(409, f"cannot read {member_id}'s connections: {exc}") from None
        return part

    def _add(self, rule: list[str]) -> None:
        done = _iptables("-A", *rule)
        if done.returncode != 0:
            raise FaultError(501, f"iptables refused {shlex.join(rule)}: {done.stderr.strip()}")
        self.rules.append(rule)

    def heal(self) -> None:
        """Rules out, processes back home, cgroup gone (whatever is left of them)."""
        for rule in reversed(self.rules):
            _iptables("-D", *rule)
        self.rules.clear()
        _empty_cgroup(self.cgroup_dir, self.home)


def _empty_cgroup(cgroup_dir: Path, home: Path) -> None:
    """Move what runs in ``cgroup_dir`` to ``home`` (the root, if home is gone), then
    remove it; the kernel may take a moment to see it empty."""
    if not cgroup_dir.is_dir():
        return
    target = home if (home / "cgroup.procs").exists() else cgroup_dir.parent
    for _ in range(50):
        with contextlib.suppress(OSError):
            for pid in (cgroup_dir / "cgroup.procs").read_text().split():
                with contextlib.suppress(OSError):  # gone meanwhile
                    _move(int(pid), target)
        try:
            cgroup_dir.rmdir()
            return
        except FileNotFoundError:
            return
        except OSError:
            time.sleep(0.02)
    raise OSError(f"could not remove the cgroup {cgroup_dir}")


def leftovers(tag: str) -> tuple[list[list[str]], list[Path]]:
    """The lab's rules and cgroups in place (nothing when this machine has none)."""
    rules: list[list[str]] = []
    if os.geteuid() == 0 and shutil.which("iptables") is not None:
        listed = _iptables("-S", "OUTPUT")
        for line in listed.stdout.splitlines() if listed.returncode == 0 else []:
            words = shlex.split(line)
            if words[:1] != ["-A"] or "--comment" not in words:
                continue
            comment = words[words.index("--comment") + 1]
            if comment == tag or comment.startswith(tag + "/"):
                rules.append(words[1:])
    root = cgroup2_root()
    cgroups = sorted(root.glob(tag + "-*")) if root is not None else []
    return rules, cgroups


def clean(tag: str) -> int:
    """Remove the lab's rules and cgroups, those a crashed lab left too; how many."""
    rules, cgroups = leftovers(tag)
    for rule in rules:
        _iptables("-D", *rule)
    root = cgroup2_root()
    for cg in cgroups:
        if root is not None:
            with contextlib.suppress(OSError):
                _empty_cgroup(cg, root)
    return len(rules) + len(cgroups)

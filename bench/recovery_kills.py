"""Several controllers: a host's owner killed at many points of its recovery.

A lab with three controllers (`lab up --controllers 3`: one PostgreSQL store, one
Redis group), each a real `medevac serve` started here. Each round crashes the healthy
host with the most HA servers and, once the store shows the round's *point* reached,
kills that host's owner (SIGKILL, the lab's `controller-kill` fault aimed at the host).
Another controller owns the host after the membership timeout and finishes the
recovery (`Recovery.take_over`), or starts the one the dead owner never recorded. Once
the recovery has ended the killed controller is started again, the host is healed and
released, and the next round moves on to the next point.

A point is what the store shows (PostgreSQL, read every ``POLL`` s): the incident, the
recovery's state, its evacuation rows, and the audit log's authorized effects
(``host.<effect>``, recorded under the owner's epoch before the effect). The ladder
runs from the crash (no verdict yet) to the last effect before completion, with four
points per evacuated server (recorded running, evacuation requested, verified, ports
up; ``--per-server`` servers). The host group recovers one server at a time
(``--concurrency 1``): so each evacuation has points of its own. The store is read
again right after the kill, which the killed process can no longer change: that is
"state at kill", the furthest point it shows (polling lands a little late).

Each round checks, and the run fails (exit 1) at the first broken one:
- the recovery ended COMPLETED; one recovery and one incident for the host this round;
- each HA server of the host evacuated exactly once: one row each in medevac's history
  and one ``evacuate`` each in Nova's own instance actions (os-instance-actions);
- no server on two hosts at any moment (``TwoHostWatch`` over the whole round);
- no audit record by the killed controller after its kill (until it was started
  again), and none later under the epoch it held;
- no host recovery workflow started in the round left pending in DBOS (a recovery
  stuck: no controller runs it and none will take it over).
A round whose recovery ended before its point showed is "missed" (no kill). With
``--keep-going`` a broken round is reported in its row and the soak goes on; the
run exits 1 all the same.

Prints a table (point, state at kill, kill to re-owned, to resumed, to completed) and
median and max (``common.tail``) of each time.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from common import print_log_tails, tail, tail_name, wait
from docs_section import write_section

from medevac.lab.client import LAB_POSTGRES, LAB_POSTGRES_ENV, LabClient, TwoHostWatch, lab_down
from medevac.lab.client import lab_up as start_lab_of
from medevac.lab.layout import LabPaths

POLL = 0.01  # s between reads of the store while waiting for a point
MEMBERSHIP_TIMEOUT = 2.0  # what `lab up --controllers` writes
ENDED = {"COMPLETED", "PARTIAL", "FAILED", "FENCING_FAILED", "NOVA_NEVER_SAW_DOWN"}


class Missed(Exception):
    """The recovery ended before the round's point showed: nothing to kill."""


class SoakFailure(Exception):
    """An invariant broke: the message says which, in which round."""


# -- the store, as the points read it ------------------------------------------------


@dataclass
class Snapshot:
    """What the store holds of one host's round (rows since the round began)."""

    incidents: list[dict[str, Any]] = field(default_factory=list)
    recoveries: list[dict[str, Any]] = field(default_factory=list)
    evacuations: list[dict[str, Any]] = field(default_factory=list)
    audit: list[dict[str, Any]] = field(default_factory=list)
    crashed: bool = False  # the lab's fault log has the crash (the agent is silent)
    owner: tuple[str, int] | None = None  # the host's owner and epoch, as the store says

    def effects(self, kind: str) -> int:
        return sum(1 for e in self.audit if e["kind"] == f"host.{kind}")

    @property
    def state(self) -> str | None:
        return self.recoveries[0]["state"] if self.recoveries else None

    def actions(self, kind: str) -> tuple[int, int]:
        """(done, recorded) of the stored incident's correction actions of ``kind``."""
        if not self.incidents:
            return 0, 0
        acts = [a for a in self.incidents[0]["body"].get("actions", []) if a.get("kind") == kind]
        return sum(1 for a in acts if a.get("ok")), len(acts)

    def ended(self) -> int:
        return sum(1 for e in self.evacuations if e["ended_at"] is not None)

    def describe(self) -> str:
        """One line: the incident, the recovery, evacuations, the last effect."""
        parts = []
        if self.incidents:
            parts.append(f"incident {self.incidents[0]['state']}")
        else:
            parts.append("no incident")
        if self.recoveries:
            parts.append(f"recovery {self.state}")
        if self.evacuations:
            parts.append(f"evac {self.ended()}/{len(self.evacuations)} ended")
        effects = [e["kind"][5:] for e in self.audit if _authorized(e)]
        if effects:
            parts.append(f"{len(effects)} effects, last {effects[-1]}")
        return ", ".join(parts)


def _authorized(e: dict[str, Any]) -> bool:
    """An effect recorded under an owner's epoch (not a claim, a refusal, or what the
    inspector or the monitor recorded of the host)."""
    kind = str(e["kind"])
    return (
        kind.startswith("host.")
        and kind not in ("host.owner", "host.stale_owner")
        and "epoch" in (e["detail"] or {})
    )


class Store:
    """Reads the lab's PostgreSQL store directly: one round trip per table."""

    def __init__(self, url: str) -> None:
        from sqlalchemy import create_engine

        self.engine = create_engine(url, pool_size=2)

    def snapshot(self, host: str, since: float) -> Snapshot:
        from sqlalchemy import text

        at = datetime.fromtimestamp(since, UTC)
        snap = Snapshot()
        with self.engine.connect() as c:
            rows = c.execute(
                text(
                    "SELECT id, state, body FROM incidents WHERE host = :h AND opened_at >= :t"
                    " ORDER BY opened_at"
                ),
                {"h": host, "t": at},
            )
            snap.incidents = [dict(r._mapping) for r in rows]
            rows = c.execute(
                text(
                    "SELECT id, state, ended_at FROM recoveries WHERE host = :h"
                    " AND started_at >= :t ORDER BY started_at"
                ),
                {"h": host, "t": at},
            )
            snap.recoveries = [dict(r._mapping) for r in rows]
            if snap.recoveries:
                rows = c.execute(
                    text(
                        "SELECT server_id, result, ended_at FROM evacuations"
                        " WHERE recovery_id = :r ORDER BY started_at"
                    ),
                    {"r": snap.recoveries[0]["id"]},
                )
                snap.evacuations = [dict(r._mapping) for r in rows]
            held = c.execute(
                text("SELECT owner, epoch FROM hosts WHERE name = :h"), {"h": host}
            ).first()
            snap.owner = (held[0], int(held[1])) if held is not None else None
            rows = c.execute(
                text(
                    "SELECT id, at, kind, actor, detail FROM audit_events WHERE subject = :h"
                    " AND at >= :t ORDER BY id"
                ),
                {"h": host, "t": at},
            )
            snap.audit = [dict(r._mapping) for r in rows]
        return snap

    def effects_by(self, actor: str, after: float, before: float) -> list[dict[str, Any]]:
        """Every audit record by ``actor`` between the two times, on any subject."""
        from sqlalchemy import text

        with self.engine.connect() as c:
            rows = c.execute(
                text(
                    "SELECT at, kind, subject, detail FROM audit_events WHERE actor = :a"
                    " AND at > :t0 AND at < :t1 ORDER BY id"
                ),
                {
                    "a": actor,
                    "t0": datetime.fromtimestamp(after, UTC),
                    "t1": datetime.fromtimestamp(before, UTC),
                },
            )
            return [dict(r._mapping) for r in rows]

    def workflows_left(self, since: float) -> list[tuple[str, str, str]]:
        """Host recoveries (DBOS workflows ``recover-<incident>``, the same database)
        created since ``since`` and not finished: (id, status, executor)."""
        from sqlalchemy import text

        with self.engine.connect() as c:
            rows = c.execute(
                text(
                    "SELECT workflow_uuid, status, executor_id FROM dbos.workflow_status"
                    " WHERE workflow_uuid LIKE 'recover-%' AND workflow_uuid NOT LIKE '%:%'"
                    " AND created_at >= :t AND status IN ('PENDING', 'ENQUEUED')"
                ),
                {"t": int(since * 1000)},
            )
            return [(str(r[0]), str(r[1]), str(r[2])) for r in rows]

    def close(self) -> None:
        self.engine.dispose()


# -- the points ----------------------------------------------------------------------

Check = Callable[[Snapshot], bool]


def ladder(per_server: int) -> list[tuple[str, Check]]:
    """The points of a host recovery in the order they come (level 2: fenced), each a
    test of what the store shows; a later point implies the earlier ones were passed."""
    points: list[tuple[str, Check]] = [
        ("crashed (no verdict)", lambda s: s.crashed),
        ("corrections authorized", lambda s: s.effects("actions") > 0),
        # A recovery starts only once its incident is in the store.
        ("incident recorded", lambda s: bool(s.incidents)),
        ("recovery STARTED", lambda s: s.state is not None),
        ("FENCING recorded", lambda s: s.effects("recovery.record.fencing") > 0),
        ("fencing: BMC asked", lambda s: s.effects("recovery.fence") > 0),
        ("FENCED", lambda s: s.effects("recovery.record.fenced") > 0),
        ("forced down", lambda s: s.effects("recovery.force_down") > 0),
        # The incident is saved once its corrections all landed (servers reset to error,
        # their ports DOWN; a server already gone from the host needs none): at once.
        (
            "servers reset, ports down",
            lambda s: bool(s.incidents) and s.incidents[0]["state"] in ("CORRECTED", "PARTIAL"),
        ),
        ("EVACUATING", lambda s: s.effects("recovery.record.evacuating") > 0),
    ]
    for k in range(1, per_server + 1):
        points += _server_points(k)
    points.append(("disable: last effect", lambda s: s.effects("recovery.disable") > 0))
    return points


def _server_points(k: int) -> list[tuple[str, Check]]:
    """The k-th evacuation's points (one at a time: the k-th server's)."""
    return [
        (f"evac {k} running", lambda s: len(s.evacuations) >= k),
        (f"evac {k} requested", lambda s: s.effects("recovery.evacuate") >= k),
        (f"evac {k} verified", lambda s: s.ended() >= k),
        (f"evac {k} ports up", lambda s: s.effects("recovery.ports_up") >= k),
    ]


def furthest(points: list[tuple[str, Check]], snap: Snapshot) -> str:
    """The last point of the ladder the snapshot shows reached."""
    reached = [name for name, check in points if check(snap)]
    if snap.state in ENDED:
        return f"{snap.state} (ended)"
    return reached[-1] if reached else "-"


# -- the controllers -----------------------------------------------------------------


class Controller:
    """One `medevac serve` on a configuration `lab up` wrote."""

    def __init__(self, info: dict[str, Any], index: int, log: Path, env: dict[str, str]):
        ctl = info["controllers"][index]
        self.member_id: str = ctl["member_id"]
        self.url: str = ctl["url"]
        self.log = log
        self.env = {**os.environ, "MEDEVAC_CONFIG": ctl["config"], **env}
        self.http = httpx.Client(
            base_url=self.url, headers={"X-Auth-Token": info["admin_token"]}, timeout=10
        )
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "medevac", "serve"],
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def get(self, path: str) -> Any:
        r = self.http.get(path)
        r.raise_for_status()
        return r.json()

    def cluster(self) -> dict[str, Any] | None:
        if not self.alive():
            return None
        try:
            r = self.http.get("/v1/cluster", timeout=2)
        except httpx.HTTPError:
            return None
        return dict(r.json()) if r.status_code == 200 else None

    def stop(self) -> None:
        if self.alive():
            assert self.proc is not None
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.http.close()


def shared_out(ctls: list[Controller], hosts: list[str]) -> bool:
    views = [c.cluster() for c in ctls]
    if any(v is None or len(v["members"]) != len(ctls) for v in views):
        return False
    return sorted(h for v in views if v is not None for h in v["hosts"]) == sorted(hosts)


def owner(ctls: list[Controller], host: str) -> tuple[Controller, int] | None:
    """The live controller holding ``host`` (the latest epoch, should two say so)."""
    found = []
    for c in ctls:
        view = c.cluster()
        if view is not None and host in view["hosts"]:
            found.append((c, int(view["hosts"][host])))
    return max(found, key=lambda f: f[1]) if found else None


# -- Nova's own record ---------------------------------------------------------------


class Nova:
    """Nova's instance actions, through openstacksdk on the lab's clouds.yaml."""

    def __init__(self, info: dict[str, Any]) -> None:
        import openstack
        import openstack.config

        config = openstack.config.OpenStackConfig(config_files=[info["clouds_yaml"]])
        self.conn = openstack.connection.Connection(config=config.get_one(cloud=info["cloud"]))

    def evacuations(self, server_id: str, since: float) -> list[dict[str, Any]]:
        """The server's ``evacuate`` actions that started at ``since`` or later."""
        found = []
        for a in self.conn.compute.server_actions(server_id):
            if a.action != "evacuate":
                continue
            started = datetime.fromisoformat(a.start_time.rstrip("Z"))
            if started.tzinfo is None:
                started = started.replace(tzinfo=UTC)
            if started.timestamp() >= since - 1.0:  # Nova's clock is this machine's
                found.append({"request_id": a.request_id, "start_time": a.start_time})
        return found

    def close(self) -> None:
        self.conn.close()


# -- one round -----------------------------------------------------------------------


@dataclass
class Round:
    point: str
    host: str
    ha: int
    at_kill: str = ""
    snapshot: str = ""
    victim: str = ""
    heir: str = ""
    reowned: float = float("nan")
    resumed: float = float("nan")
    completed: float = float("nan")
    latency: float = float("nan")  # point seen to SIGKILL sent
    result: str = "ok"


class Soak:
    def __init__(
        self, paths: LabPaths, info: dict[str, Any], ctls: list[Controller], per_server: int
    ) -> None:
        self.paths = paths
        self.per_server = per_server
        self.keep_going = False  # a broken round is recorded, and the next one runs
        self.last_victim: str | None = None
        self.info = info
        self.ctls = ctls
        self.lab = LabClient(paths)
        postgres = os.environ.get(LAB_POSTGRES_ENV) or LAB_POSTGRES
        self.store = Store(f"{postgres}/{paths.database_name}")
        self.nova = Nova(info)
        self.hosts: list[str] = list(info["hosts"])

    def close(self) -> None:
        self.store.close()
        self.nova.close()
        self.lab.close()

    def dump_store(self) -> None:
        """On a failure: the store's recoveries, incidents and audit of the last hour."""
        since = time.time() - 3600
        for host in self.hosts:
            snap = self.store.snapshot(host, since)
            if not (snap.recoveries or snap.incidents):
                continue
            print(f"--- store, {host}: owner {snap.owner}")
            for x in snap.incidents:
                print(f"incident {x['id']} {x['state']}")
            for x in snap.recoveries:
                print(f"recovery {x['id']} {x['state']} ended {x['ended_at']}")
            for e in snap.audit:
                print(f"audit {e['at']:%H:%M:%S.%f} {e['kind']} {e['actor']} {e['detail']}")

    def diagnose(self) -> None:
        """On a takeover that does not come: the group as Redis holds it (each member's
        heartbeat key and its time to live), the store's sessions, the processes."""
        import redis
        from sqlalchemy import text

        r = redis.Redis(port=6379)
        for key in sorted(r.scan_iter(count=1000)):
            if b"_beats" in key or b"_group" in key:
                if self.paths.database_name.encode() not in key:
                    continue
                kind = r.type(key)
                value = r.hgetall(key).keys() if kind == b"hash" else r.get(key)
                print(f"redis {key!r}: {value!r}, ttl {r.pttl(key)} ms")
        with self.store.engine.connect() as c:
            rows = c.execute(
                text(
                    "SELECT pid, state, wait_event_type, wait_event, xact_start, query"
                    " FROM pg_stat_activity WHERE datname = current_database()"
                )
            )
            for row in rows:
                print(f"pg {tuple(row)}")
        for ctl in self.ctls:
            pid = ctl.proc.pid if ctl.proc else None
            print(f"{ctl.member_id}: pid {pid}, alive {ctl.alive()}")

    def snap(self, host: str, since: float) -> Snapshot:
        snap = self.store.snapshot(host, since)
        snap.crashed = self.crashed(host, since)
        return snap

    def crashed(self, host: str, since: float) -> bool:
        """The lab has recorded the crash: its model has the host dead, its agent
        silent (Nova follows in the background: the call that injects it returns later)."""
        log = self.paths.faults_log
        lines = log.read_text().splitlines() if log.exists() else []
        return any(
            (f["kind"], f["target"], f["action"]) == ("host-crash", host, "inject")
            and f["time"] >= since
            for f in map(json.loads, lines)
        )

    def crash(self, host: str) -> threading.Thread:
        """Crash ``host`` from a thread: the lab answers once Nova has caught up, well
        after the recovery began, and the store is read meanwhile."""
        thread = threading.Thread(target=self.lab.inject, args=("host-crash", host), daemon=True)
        thread.start()
        return thread

    def ha_on(self, host: str) -> list[dict[str, Any]]:
        return [
            s
            for s in self.lab.status()["servers"]
            if s["host"] == host
            and s["metadata"].get("HA_Enabled") == "True"
            and s["status"] == "ACTIVE"
        ]

    def pick(self, need: int, avoid: str | None) -> tuple[str, list[dict[str, Any]]]:
        """The healthy host with the most HA servers; among those with ``need`` or more,
        one its owner is not ``avoid`` (the last round's victim) when there is one: the
        ring would otherwise keep striking the controller that owns the fullest hosts."""
        status = self.lab.status()
        lives = {h["name"]: h for h in self.ctls[0].get("/v1/hosts")["hosts"]}
        healthy = [
            h["name"]
            for h in status["hosts"]
            if not h["faults"]
            and not h["nova"]["forced_down"]
            and h["nova"]["status"] == "enabled"
            and lives.get(h["name"], {}).get("state") == "UP"
        ]
        counts = {h: 0 for h in healthy}
        for s in status["servers"]:
            if (
                s["host"] in counts
                and s["metadata"].get("HA_Enabled") == "True"
                and s["status"] == "ACTIVE"
            ):
                counts[s["host"]] += 1
        owners = {}
        for c in self.ctls:
            view = c.cluster() or {"hosts": {}}
            owners.update(dict.fromkeys(view["hosts"], c.member_id))
        enough = [h for h in counts if counts[h] >= need]
        elsewhere = [h for h in enough if owners.get(h) != avoid]
        pool = elsewhere or enough or list(counts)
        host = max(sorted(pool), key=lambda h: counts[h])
        return host, self.ha_on(host)

    def run(self, name: str, check: Check, points: list[tuple[str, Check]]) -> Round:
        try:
            return self._run(name, check, points)
        except RuntimeError as exc:  # a wait ran out: a takeover or a recovery stuck
            raise SoakFailure(f"round {name!r}: {exc}") from None

    def settled(self, hold: float = 2.0) -> None:
        """The three share the hosts, and have for ``hold`` s: a controller started
        again makes the hosts move for a moment, and a round starts on a still group."""
        since: float | None = None
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if shared_out(self.ctls, self.hosts):
                since = since or time.monotonic()
                if time.monotonic() - since >= hold:
                    return
            else:
                since = None
            time.sleep(0.2)
        raise SoakFailure("the three controllers never settled on a share of the hosts")

    def _run(self, name: str, check: Check, points: list[tuple[str, Check]]) -> Round:
        self.settled()
        host, ha = self.pick(self.per_server + 1, self.last_victim)
        r = Round(name, host, len(ha))
        t0 = time.time()
        try:
            with TwoHostWatch(self.lab, every=0.05) as watch:
                crashing = self.crash(host)
                deadline = time.monotonic() + 60
                while not check(snap := self.snap(host, t0)):
                    if snap.state in ENDED:  # the point never came: no kill, no verdict
                        raise Missed(str(snap.state))
                    if time.monotonic() > deadline:
                        raise SoakFailure(f"{name}: never reached on {host} ({snap.describe()})")
                    time.sleep(POLL)
                reached = time.time()
                # The lab's controller-kill aimed at the owner the store names: resolving a
                # host asks every controller over HTTP first, hundreds of ms on a busy lab.
                if snap.owner is None:
                    raise SoakFailure(f"{name}: the store names no owner of {host}")
                target, epoch = snap.owner
                struck = self.lab.inject("controller-kill", target)
                killed_at = float(struck["time"])
                r.latency = killed_at - reached
                victim = next(c for c in self.ctls if c.member_id == struck["member_id"])
                r.victim = self.last_victim = victim.member_id
                assert victim.proc is not None
                victim.proc.wait(10)
                snap = self.snap(host, t0)
                r.at_kill, r.snapshot = furthest(points, snap), snap.describe()
                survivors = [c for c in self.ctls if c is not victim]

                def reowned() -> tuple[Controller, int] | None:
                    found = owner(survivors, host)
                    return found if found is not None and found[1] > epoch else None

                try:
                    heir, new_epoch = wait(
                        f"{host} re-owned", reowned, MEMBERSHIP_TIMEOUT + 15, POLL
                    )
                except RuntimeError:
                    self.diagnose()
                    views = {c.member_id: c.cluster() for c in survivors}
                    raise SoakFailure(
                        f"round {name!r}: {host} not re-owned after {r.victim} (epoch {epoch}) was "
                        f"killed at {r.at_kill!r}; the survivors' views: {views}"
                    ) from None
                r.reowned = time.time() - killed_at
                r.heir = heir.member_id

                def acted() -> float | None:
                    acts = [
                        e["at"].timestamp()
                        for e in self.snap(host, t0).audit
                        if e["actor"] == heir.member_id
                        and _authorized(e)
                        and e["detail"]["epoch"] == new_epoch
                    ]
                    return min(acts) if acts else None

                def ended() -> Snapshot | None:
                    """Once one recovery of the round ended (and a moment more: a second
                    one, which must not exist, would show); None before."""
                    s = self.snap(host, t0)
                    return s if any(x["state"] in ENDED for x in s.recoveries) else None

                if snap.state not in ENDED:
                    r.resumed = wait("the heir's first effect", acted, 60, POLL) - killed_at
                done = wait(f"{host}'s recovery to end", ended, 180, 0.05)
                last = max(x["ended_at"] for x in done.recoveries if x["ended_at"] is not None)
                r.completed = 0.0 if snap.state in ENDED else last.timestamp() - killed_at
                crashing.join(60)
                # Their evacuations ended: the watch has seen every move of this round.
                time.sleep(0.2)
        except Missed as missed:
            crashing.join(60)
            r.result = r.at_kill = f"missed (the recovery ended {missed} first)"
            self.put_back(host, t0)
            return r
        time.sleep(2.0)  # a second recovery of the host, or an effect late, would show
        restarted_at = time.time()
        try:
            self.check(r, host, ha, t0, watch, heir, victim, killed_at, restarted_at, epoch)
        except SoakFailure as exc:
            r.result = f"FAILED: {exc}"
            if not self.keep_going:
                raise
        finally:
            victim.start()
            wait("the three sharing the hosts again", lambda: shared_out(self.ctls, self.hosts), 60)
        late = [
            e
            for e in self.snap(host, t0).audit
            if e["actor"] == victim.member_id
            and (e["detail"] or {}).get("epoch") == epoch
            and e["at"].timestamp() > killed_at
        ]
        if late:
            raise SoakFailure(f"round {name}: {victim.member_id} acted under epoch {epoch}: {late}")
        self.put_back(host, t0)
        if r.result != "ok":
            print(f"round {name!r} on {host}: {r.result}", flush=True)  # a broken one
        return r

    def trace(self, points: list[tuple[str, Check]]) -> None:
        """One recovery, no kill: when the store first showed each point (how wide
        each point's window is on this lab); the host is put back after."""
        host, ha = self.pick(self.per_server + 1, None)
        t0 = time.time()
        crashing = self.crash(host)
        seen: list[str] = []
        while True:
            snap = self.snap(host, t0)
            for name, check in points:
                if name not in seen and check(snap):
                    seen.append(name)
                    print(f"trace {host} ({len(ha)} HA): +{time.time() - t0:.3f} s {name}")
            if snap.state in ENDED:
                print(f"trace {host}: +{time.time() - t0:.3f} s {snap.state}", flush=True)
                break
            time.sleep(POLL)
        crashing.join(60)
        self.put_back(host, t0)

    def check(
        self,
        r: Round,
        host: str,
        ha: list[dict[str, Any]],
        t0: float,
        watch: TwoHostWatch,
        heir: Controller,
        victim: Controller,
        killed_at: float,
        restarted_at: float,
        epoch: int,
    ) -> None:
        where = f"round '{r.point}' on {host} ({victim.member_id} killed at {r.at_kill})"
        recs = [x for x in heir.get(f"/v1/recoveries?host={host}")["recoveries"]]
        recs = [x for x in recs if x["started_at"] >= t0]
        if len(recs) != 1:
            told = [(x["id"], x["state"]) for x in recs]
            raise SoakFailure(f"{where}: {len(recs)} recoveries of {host}: {told}")
        # Rounds run one at a time: every host recovery started in this one is this
        # host's. One left pending (no controller runs it, none will take it over) is
        # a recovery stuck, even one that never wrote its record.
        left = self.store.workflows_left(t0)
        if left:
            raise SoakFailure(f"{where}: recovery workflows left unfinished: {left}")
        rec = heir.get(f"/v1/recoveries/{recs[0]['id']}")
        if rec["state"] != "COMPLETED":
            raise SoakFailure(f"{where}: recovery ended {rec['state']}: {rec['detail']}")
        incs = [i for i in heir.get(f"/v1/incidents?host={host}")["incidents"]]
        incs = [i for i in incs if i["opened_at"] >= t0]
        if len(incs) != 1:
            raise SoakFailure(f"{where}: {len(incs)} incidents: {[i['id'] for i in incs]}")
        want = sorted(s["id"] for s in ha)
        rows = heir.get(f"/v1/history?host={host}&limit=1000")["evacuations"]
        rows = [x for x in rows if x["recovery_id"] == rec["id"]]
        if sorted(x["server_id"] for x in rows) != want:
            raise SoakFailure(f"{where}: history {[(x['server_id'], x['result']) for x in rows]}"
                              f" is not one row for each of {want}")  # fmt: skip
        bad = [x for x in rows if x["result"] not in ("recovered", "already-moved")]
        if bad:
            raise SoakFailure(f"{where}: evacuations not recovered: {bad}")
        for sid in want:
            evacs = self.nova.evacuations(sid, t0)
            if len(evacs) != 1:
                raise SoakFailure(f"{where}: Nova shows {len(evacs)} evacuations of {sid}: {evacs}")
        if watch.samples < 5 or watch.twice:
            raise SoakFailure(
                f"{where}: servers on two hosts: {watch.twice[:3]} ({watch.samples} samples)"
            )
        after = self.store.effects_by(victim.member_id, killed_at, restarted_at)
        if after:
            raise SoakFailure(f"{where}: {victim.member_id} recorded after its kill: {after}")

    def put_back(self, host: str, t0: float) -> None:
        """Power the host on again (its fencing cut the power; that heals the crash as
        well), release it once Nova lets it go, its incident closed."""
        active = next(h for h in self.lab.status()["hosts"] if h["name"] == host)["faults"]
        for kind in ("power-loss", "host-crash"):
            if kind in active:
                self.lab.heal(kind, host)
                break

        def released() -> bool:
            found = owner(self.ctls, host)
            if found is None:
                return False
            r = found[0].http.post(f"/v1/hosts/{host}/release", timeout=60)
            return r.status_code == 200

        wait(f"{host} released", released, 120, 1.0)

        def closed() -> bool:
            return all(i["state"] == "CLOSED" for i in self.store.snapshot(host, t0).incidents)

        wait(f"{host}'s incident closed in the store", closed, 60, 0.2)
        # Every controller says so too: none keeps a stale open copy in memory (one
        # that gained the host and lost it again while it read the journal once did).
        ids = {i["id"] for i in self.store.snapshot(host, t0).incidents}
        for c in self.ctls:
            seen = c.get(f"/v1/incidents?host={host}&limit=20")["incidents"]
            stale = [
                (i["id"], i["state"]) for i in seen if i["id"] in ids and i["state"] != "CLOSED"
            ]
            if stale:
                raise SoakFailure(
                    f"{c.member_id} shows {host}'s incident open, closed in the store: {stale}"
                )

        def clean() -> bool:
            running = self.lab.running()
            return not any(host in h and len(h) > 1 for h in running.values())

        wait(f"no evacuated server left on {host}", clean, 60, 0.2)


# -- the run -------------------------------------------------------------------------


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--points", type=int, default=0, help="rounds, one point each (0: all)")
    p.add_argument("--per-server", type=int, default=3, help="evacuations with points")
    p.add_argument("--hosts", type=int, default=5)
    p.add_argument("--servers-per-host", type=int, default=6)
    p.add_argument("--concurrency", type=int, default=1, help="evacuations at once")
    p.add_argument("--trace", action="store_true", help="first, one recovery without a kill")
    p.add_argument("--only", help="these points only (names, separated by ;)")
    p.add_argument(
        "--keep-going",
        action="store_true",
        help="a round whose invariants broke is reported and the soak goes on (exit 1 at the end)",
    )
    p.add_argument("--repeat", type=int, default=1, help="the points, this many times over")
    p.add_argument("--write-docs", type=Path)
    p.add_argument("--section", default="recovery-kills")
    args = p.parse_args()
    points = ladder(args.per_server)
    chosen = spread(points, args.points) if args.points else points
    if args.only:
        chosen = [pt for pt in points if pt[0] in args.only.split(";")]
    chosen = chosen * args.repeat
    groups = [{"name": "soak", "hosts": ["*"], "concurrency": args.concurrency}]
    env = {"MEDEVAC_RECOVERY__GROUPS": json.dumps(groups)}
    started = time.monotonic()
    rounds: list[Round] = []
    failure: str | None = None
    with tempfile.TemporaryDirectory(prefix="medevac-kills-") as d:
        paths = LabPaths(Path(d))
        t = time.monotonic()
        info = start_lab_of(paths, args.hosts, args.servers_per_host, controllers=3)
        print(f"lab of {args.hosts} hosts ready in {time.monotonic() - t:.0f} s", flush=True)
        ctls = [
            Controller(info, i, paths.controller_log_of(i + 1), env)
            for i in range(len(info["controllers"]))
        ]
        soak: Soak | None = None
        try:
            for c in ctls:
                c.start()
            hosts = list(info["hosts"])
            wait("three controllers sharing the hosts", lambda: shared_out(ctls, hosts), 120, 0.2)
            wait("every host UP", lambda: all_up(ctls[0]), 60, 0.2)
            soak = Soak(paths, info, ctls, args.per_server)
            soak.keep_going = args.keep_going
            if args.trace:
                soak.trace(points)
            for i, (name, check) in enumerate(chosen):
                t = time.monotonic()
                try:
                    r = soak.run(name, check, points)
                except SoakFailure as exc:
                    failure = str(exc)
                    break
                rounds.append(r)
                if r.result.startswith("FAILED"):
                    failure = failure or r.result
                print(
                    f"round {i + 1}/{len(chosen)} {name!r} on {r.host} ({r.ha} HA): "
                    f"{r.victim} killed {r.latency * 1000:.0f} ms after, at {r.at_kill!r} "
                    f"[{r.snapshot}]; {r.heir} owned it "
                    f"+{r.reowned * 1000:.0f} ms, acted +{r.resumed * 1000:.0f} ms, "
                    f"completed +{r.completed:.1f} s; round {time.monotonic() - t:.0f} s",
                    flush=True,
                )
        except BaseException:
            print_log_tails((c.member_id, c.log) for c in ctls)
            raise
        finally:
            failed = failure is not None or sys.exc_info()[0] is not None
            if failed and soak is not None:
                soak.dump_store()
            if soak is not None:
                soak.close()
            for c in ctls:
                c.stop()  # their logs flushed, then kept
            if failed:
                kept = Path(tempfile.mkdtemp(prefix="medevac-kills-logs-"))
                for f in [*Path(d).glob("*.log"), *Path(d).glob("*.json*")]:
                    shutil.copy(f, kept)
                print(f"FAILED: {failure}; the lab's and controllers' logs: {kept}", flush=True)
            lab_down(paths)
    took = time.monotonic() - started
    # Into the docs from a run that held throughout, or one that went on past broken
    # rounds (each row says what broke); never from a run cut short.
    report(
        args,
        rounds,
        took,
        write=failure is None or (args.keep_going and len(rounds) == len(chosen)),
    )
    if failure:
        print(f"recovery-kills soak FAILED: {failure}", file=sys.stderr)
        sys.exit(1)


def all_up(ctl: Controller) -> bool:
    return all(h["state"] == "UP" for h in ctl.get("/v1/hosts")["hosts"])


def spread(points: list[tuple[str, Check]], n: int) -> list[tuple[str, Check]]:
    """``n`` points spread over the ladder, its first and last among them."""
    if n >= len(points):
        return points
    if n == 1:
        return [points[len(points) // 2]]
    picks = sorted({round(i * (len(points) - 1) / (n - 1)) for i in range(n)})
    return [points[i] for i in picks]


def report(args: argparse.Namespace, rounds: list[Round], took: float, *, write: bool) -> None:
    """The table and the summary; into the docs only from a run that held throughout."""
    table = [
        "| point aimed at | state at kill (what the store showed) | kill to re-owned | "
        "kill to resumed | kill to completed | result |",
        "|---|---|---|---|---|---|",
    ]
    for r in rounds:
        if r.reowned != r.reowned:  # missed: the recovery ended before the point
            table.append(f"| {r.point} | - | - | - | - | {r.result} |")
            continue
        resumed = "-" if r.resumed != r.resumed else f"{r.resumed * 1000:.0f} ms"
        table.append(
            f"| {r.point} | {r.at_kill}: {r.snapshot} | {r.reowned * 1000:.0f} ms | "
            f"{resumed} | {r.completed:.1f} s | {r.result[:300]} |"
        )
    body = "\n".join(table)
    print(body)
    summary = []
    killed = [r for r in rounds if r.reowned == r.reowned]  # not the missed ones
    for label, values in (
        ("kill to re-owned", [r.reowned for r in killed]),
        ("kill to resumed", [r.resumed for r in killed if r.resumed == r.resumed]),
        ("kill to completed", [r.completed for r in killed]),
    ):
        if not values:
            continue
        _, far = tail(values)
        summary.append(
            f"| {label} | {len(values)} | {statistics.median(values):.2f} s | {far:.2f} s |"
        )
    column = tail_name([r.reowned for r in killed])
    head = [f"| from the kill | rounds | median | {column} |", "|---|---|---|---|"]
    stats = "\n".join([*head, *summary])
    print(stats)
    distinct = len({r.at_kill for r in killed})
    held = sum(1 for r in killed if r.result == "ok")
    print(
        f"recovery-kills soak: {len(killed)} rounds with a kill ({len(rounds)} run), "
        f"{held} held every invariant, {distinct} distinct points hit, {took:.0f} s"
    )
    if not write or not args.write_docs or not rounds:
        return
    write_section(
        args.write_docs,
        args.section,
        body + "\n\n" + stats,
        note=(
            f"A lab of {args.hosts} hosts x {args.servers_per_host} servers and three "
            f"`medevac serve` (one PostgreSQL store, a Redis group, membership timeout "
            f"{MEMBERSHIP_TIMEOUT:g} s); evacuations {args.concurrency} at a time. Each "
            f"round crashes the healthy host with most HA servers and SIGKILLs its owner "
            f"(the lab's controller-kill) once the store, read every {POLL * 1000:.0f} ms, "
            f"shows the point reached. {held} of {len(killed)} rounds held every "
            f"invariant (the recovery COMPLETED, one recovery and one incident, each HA "
            f"server evacuated once by medevac's history and Nova's instance actions, no "
            f"server on two hosts, nothing recorded by the killed controller); "
            f"{distinct} distinct points at the kill; the whole run: {took:.0f} s."
        ),
    )


if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.default_int_handler)
    main()

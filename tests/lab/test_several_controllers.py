"""Three controllers on the lab (one PostgreSQL store, one Redis group): the owner of
a crashed host is killed (SIGKILL, the lab's controller-kill fault) right after its
recovery fenced the host, and another controller finishes that recovery: every HA
server evacuated exactly once, never a server on two hosts.

Needs PostgreSQL and Redis on 127.0.0.1 (`make services`); fails when they are not.
"""

from __future__ import annotations

import json
import socket
import time
import tomllib
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from medevac.cluster.ownership import NOT_OWNER
from medevac.lab import partition
from medevac.lab.client import TwoHostWatch
from tests.conftest import ConsumerProcess, wait_for
from tests.lab.conftest import Controller, RunningLab, as_json, shared_out, start_lab

ENDED = {"COMPLETED", "PARTIAL", "FAILED", "FENCING_FAILED", "NOVA_NEVER_SAW_DOWN"}
BEFORE_FENCED = {"STARTED", "FENCING"}
MEMBERSHIP_TIMEOUT = 2.0  # what `lab up --controllers` writes


def _listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture(scope="module")
def clab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningLab]:
    for port, what in ((5432, "PostgreSQL"), (6379, "Redis")):
        if not _listening(port):
            pytest.fail(f"{what} is not running on 127.0.0.1:{port} (make services starts it)")
    # host1: four servers, three of them HA.
    yield from start_lab(
        tmp_path_factory.mktemp("cluster-lab"), hosts=4, servers_per_host=4, controllers=3
    )


@pytest.fixture(scope="module")
def ctls(clab: RunningLab) -> Iterator[list[Controller]]:
    controllers = Controller.start_all(
        clab, MEDEVAC_RECOVERY__CHECK_INTERVAL="0.25", MEDEVAC_RECOVERY__CHECK_MAX_COUNT="6"
    )
    try:
        yield controllers
    finally:
        failed: list[BaseException] = []
        for c in controllers:
            if c.proc.poll() is None:
                try:
                    c.stop()
                except BaseException as exc:  # the others still stop; this one is killed
                    failed.append(exc)
                    c.kill()
        if failed:
            raise failed[0]


def owner(ctls: list[Controller], host: str) -> tuple[Controller, int] | None:
    """The live controller that holds ``host``, and its epoch."""
    for c in ctls:
        if c.proc.poll() is not None:
            continue
        view = c.cluster()
        if view is not None and host in view["hosts"]:
            return c, int(view["hosts"][host])
    return None


def recovery_of(ctl: Controller, host: str, after: float) -> dict[str, Any] | None:
    for r in ctl.get(f"/v1/recoveries?host={host}")["recoveries"]:
        if r["started_at"] >= after:
            return dict(ctl.get(f"/v1/recoveries/{r['id']}"))
    return None


def crash_until_fenced(
    clab: RunningLab, ctl: Controller, host: str, since: float
) -> dict[str, Any]:
    """Crash ``host`` and wait until ``ctl``, its owner, has fenced it: its recovery."""
    clab.client.inject("host-crash", host)

    def fenced() -> dict[str, Any] | None:
        rec = recovery_of(ctl, host, since)
        return rec if rec is not None and rec["state"] not in BEFORE_FENCED else None

    found: dict[str, Any] = wait_for(f"{ctl.member_id} to fence {host}", fenced, 60, 0.02)
    return found


def strike_once_fenced(
    clab: RunningLab, ctl: Controller, host: str, fault: str, since: float
) -> tuple[dict[str, Any], float]:
    """Crash ``host``, wait until ``ctl``, its owner, has fenced it, then strike ``ctl``
    with ``fault`` (controller-kill, controller-pause) through the host: its recovery
    as it was, and when the strike landed."""
    rec = crash_until_fenced(clab, ctl, host, since)
    assert rec["state"] not in ENDED, f"the recovery ended before the {fault}: {rec['state']}"
    struck = clab.client.inject(fault, host)
    assert struck["member_id"] == ctl.member_id, struck
    return rec, float(struck["time"])


def ha_on(clab: RunningLab, host: str) -> list[dict[str, Any]]:
    """The servers on ``host`` with HA_Enabled."""
    return [s for s in clab.servers_on(host) if s["metadata"].get("HA_Enabled") == "True"]


def epoch_seconds(iso: str) -> float:
    return datetime.fromisoformat(iso).timestamp()


def test_lab_up_configures_each_controller_and_env_says_how_to_start_it(
    clab: RunningLab,
) -> None:
    infos = clab.info["controllers"]
    assert [c["member_id"] for c in infos] == ["ctl-1", "ctl-2", "ctl-3"]
    configs = [tomllib.loads(Path(c["config"]).read_text()) for c in infos]
    assert [Path(c["config"]).name for c in infos] == [f"medevac-{i}.toml" for i in (1, 2, 3)]
    assert not clab.paths.controller_config.exists()  # no medevac.toml in a lab of several
    assert len({c["api"]["port"] for c in configs}) == 3
    assert len({c["monitor"]["listen_port"] for c in configs}) == 3
    for key in ("api", "storage", "hosts"):
        section = [{k: v for k, v in c[key].items() if k != "port"} for c in configs]
        assert section[0] == section[1] == section[2], key  # same tokens, store, BMCs
    assert configs[0]["storage"]["url"].startswith("postgresql+psycopg://")
    assert configs[0]["storage"]["url"].endswith("/" + clab.paths.database_name)
    clusters = [c["cluster"] for c in configs]
    assert [c["member_id"] for c in clusters] == ["ctl-1", "ctl-2", "ctl-3"]
    assert len({c["group"] for c in clusters}) == 1 and clusters[0]["membership_timeout"] == 2.0
    env = clab.cli("lab", "env")
    assert f"export MEDEVAC_CONFIG={infos[0]['config']}" in env.stdout
    for c in infos:
        assert f"MEDEVAC_CONFIG={c['config']} medevac serve &" in env.stderr


def test_a_paused_owner_is_replaced_and_rejoins_once_healed(
    clab: RunningLab, ctls: list[Controller]
) -> None:
    host = "host2"
    first = owner(ctls, host)
    assert first is not None
    sleeper, epoch = first
    struck = clab.client.inject("controller-pause", host)
    assert (struck["member_id"], struck["pid"]) == (sleeper.member_id, sleeper.proc.pid)
    try:
        others = [c for c in ctls if c is not sleeper]

        def reowned() -> bool:
            found = owner(others, host)
            return found is not None and found[1] > epoch

        wait_for(f"{host} re-owned while its owner sleeps", reowned, MEMBERSHIP_TIMEOUT + 10)
    finally:
        clab.client.heal("controller-pause", str(sleeper.member_id))
    wait_for(
        "it says it was replaced",
        lambda: "was replaced while it was not heard from" in sleeper.log.read_text(),
        20,
    )
    wait_for("every controller back with its share", lambda: shared_out(ctls), 60)
    assert sleeper.proc.poll() is None


def test_a_cut_off_owner_acts_on_nothing_and_another_recovers_its_host(
    clab: RunningLab, ctls: list[Controller], consumer: ConsumerProcess
) -> None:
    """The owner of a host is cut off by the kernel (controller-partition: no Redis, no
    peers, no heartbeats; the store, Nova, the BMCs and the consumer still reachable)
    and the host crashes right after, before its lease runs out: the cut-off one
    records no verdict and no effect on any host, says it is isolated (critical event,
    delivered), and another controller recovers the host, once. Healed, it rejoins
    (restarting afresh) and nothing is recovered twice."""
    host = "host4"  # host1-host3 are the other tests'
    ha = ha_on(clab, host)
    first = owner(ctls, host)
    assert first is not None and ha, (first, ha)
    cut, epoch = first
    others = [c for c in ctls if c is not cut]
    alarm = {
        "name": "controller-isolated",
        "type": "event",
        "alarm_actions": [f"{consumer.url}/isolated"],
        "event_rule": {"event_type": "medevac.controller.isolated", "query": []},
    }
    made = httpx.post(
        cut.url + "/v2/alarms", json=alarm, headers={"X-Auth-Token": cut.token}, timeout=10
    )
    assert made.status_code == 201, made.text
    # A zone held (the lab's agents stalled on a loaded machine) would hold the
    # recovery for minutes: say so rather than time out below.
    held = {c.member_id: c.get("/v1/inspector")["guard"] for c in others}
    assert not any(held.values()), f"a zone is held before the fault: {held}"
    t0 = time.time()
    with TwoHostWatch(clab.client) as watch:
        struck = clab.client.inject("controller-partition", host)
        cut_at = float(struck["time"])
        assert struck["member_id"] == cut.member_id and struck["rules"] >= 6, struck
        clab.client.inject("host-crash", host)
        try:

            def reowned() -> tuple[Controller, int] | None:
                found = owner(others, host)
                return found if found is not None and found[1] > epoch else None

            heir, new_epoch = wait_for(f"{host} re-owned", reowned, MEMBERSHIP_TIMEOUT + 10, 0.02)
            reowned_after = time.time() - cut_at

            def isolated_event() -> dict[str, Any] | None:
                for r in consumer.received():
                    if r["event_type"] == "medevac.controller.isolated" and r["traits"].get(
                        "controller"
                    ) == str(cut.member_id):
                        return r
                return None

            told = wait_for("its critical isolated event delivered", isolated_event, 20, 0.05)

            def ended() -> dict[str, Any] | None:
                r = recovery_of(heir, host, t0)
                return r if r is not None and r["state"] in ENDED else None

            done = wait_for(f"{host}'s recovery to end", ended, 120, 0.2)
            assert cut.proc.poll() is None  # still running, still cut off, still trying
            tries = cut.log.read_text().count("coordination backend")
        finally:
            healed_at = float(clab.client.heal("controller-partition", str(cut.member_id))["time"])
        wait_for(
            "it says it was replaced",
            lambda: "was replaced while it was not heard from" in cut.log.read_text(),
            30,
        )
        wait_for("back, afresh, with its share", lambda: shared_out(ctls), 60)
        back_after = time.time() - healed_at
    assert not any(partition.leftovers(partition.lab_tag(clab.paths.root))), "a rule stayed"
    assert done["state"] == "COMPLETED", json.dumps(done, indent=1)
    # Nothing done by the cut-off controller while cut, on any host: every effect is
    # recorded under its actor; refusals (host.stale_owner) are not effects.
    acted = [
        e
        for h in clab.info["hosts"]
        for e in heir.get(f"/v1/audit?subject={h}&limit=1000")["events"]
        if e["actor"] == cut.member_id
        and cut_at < epoch_seconds(e["at"]) < healed_at
        and e["kind"] != "host.stale_owner"
    ]
    assert acted == [], acted
    # Every verdict on a host while it was cut off was another's: each is in the memory
    # of a controller never cut off (the audit log names the monitor, not the member).
    verdicts = {
        e["trace_id"]: (h, e["kind"])
        for h in clab.info["hosts"]
        for e in heir.get(f"/v1/audit?subject={h}&limit=1000")["events"]
        if e["kind"].startswith("verdict.") and cut_at < epoch_seconds(e["at"]) < healed_at
    }
    theirs = {v["trace_id"] for c in others for v in c.verdicts()}
    assert (host, "verdict.HOST_UNREACHABLE") in verdicts.values(), verdicts
    assert set(verdicts) <= theirs, (verdicts, theirs)
    assert told["traits"].get("isolated") in (True, "True", "true"), told
    # Replaced, it took nothing more before its restart (the new process begins with
    # its store's migration): no claim by a process going away.
    dying = cut.log.read_text().split("was replaced while it was not heard from", 1)[1]
    assert " gained " not in dying.split("alembic.runtime.migration", 1)[0], dying[:2000]
    # The host recovered once, by the heir; still once now that the cut-off one is back.
    rows = heir.get(f"/v1/history?host={host}&limit=1000")["evacuations"]
    assert sorted(r["server_id"] for r in rows) == sorted(s["id"] for s in ha), rows
    assert len(heir.get(f"/v1/recoveries?host={host}")["recoveries"]) == 1
    assert sorted(e["server_id"] for e in done["evacuations"]) == sorted(s["id"] for s in ha)
    assert watch.samples > 5 and watch.twice == [], f"servers on two hosts: {watch.twice[:3]}"
    print(
        f"\n{cut.member_id} cut off ({struck['rules']} rules), {host} crashed: "
        f"{heir.member_id} owned it {reowned_after * 1000:.0f} ms after the cut (epoch "
        f"{epoch} -> {new_epoch}); isolated event received {told['at'] - cut_at:.2f} s "
        f"after it; recovery {done['state']}; {tries} backend errors logged while cut; "
        f"back with its share {back_after:.1f} s after the heal"
    )
    put_back(clab, ctls, host)  # the next tests' evacuations need its room


def put_back(clab: RunningLab, ctls: list[Controller], host: str) -> None:
    """Power a recovered host on again (its fencing cut the power; that heals the crash
    as well) and release it once Nova lets it go."""
    active = next(h for h in clab.status()["hosts"] if h["name"] == host)["faults"]
    clab.client.heal(next(k for k in ("power-loss", "host-crash") if k in active), host)

    def released() -> bool:
        found = owner(ctls, host)
        if found is None:
            return False
        r = httpx.post(
            f"{found[0].url}/v1/hosts/{host}/release",
            headers={"X-Auth-Token": found[0].token},
            timeout=60,
        )
        return r.status_code == 200

    wait_for(f"{host} released", released, 120, 1.0)


def maintenance_of(ctl: Controller, host: str) -> dict[str, Any]:
    return dict(ctl.get(f"/v1/hosts/{host}/maintenance"))


def refused_by(ctl: Controller, method: str, host: str, body: Any = None) -> str:
    """What ``ctl`` answered a maintenance start (POST) or end (DELETE) it refused with
    409: its reason."""
    r = httpx.request(
        method,
        f"{ctl.url}/v1/hosts/{host}/maintenance",
        json=body,
        headers={"X-Auth-Token": ctl.token},
        timeout=30,
    )
    assert r.status_code == 409, (ctl.member_id, method, r.status_code, r.text)
    return r.text


def test_a_maintenance_whose_owner_is_killed_at_the_deadline_is_finished_by_another(
    clab: RunningLab, ctls: list[Controller]
) -> None:
    """A maintenance started through the owner of a host, the owner SIGKILLed while it
    waits for the deadline: another controller takes the host over and finishes it,
    every HA server live-migrated once, never a server on two hosts; a controller that
    does not own the host refuses to start or end its maintenance (409, and why)."""
    host = "host2"  # up since the pause test, every other host up too
    ha = {s["id"] for s in ha_on(clab, host)}
    plain = {s["id"] for s in clab.servers_on(host)} - ha
    first = owner(ctls, host)
    assert first is not None and ha, (first, ha)
    victim, epoch = first
    others = [c for c in ctls if c is not victim]
    body = {
        "reason": "new fans",
        "deadline": (datetime.now(UTC) + timedelta(seconds=8)).isoformat(),
    }
    assert NOT_OWNER in refused_by(others[0], "POST", host, body)  # nothing opened there

    t0 = time.time()
    with TwoHostWatch(clab.client) as watch:
        r = httpx.post(
            f"{victim.url}/v1/hosts/{host}/maintenance",
            json=body,
            headers={"X-Auth-Token": victim.token},
            timeout=30,
        )
        assert r.status_code == 202, r.text
        started = r.json()
        assert started["state"] == "SCHEDULED", started

        def waiting() -> bool:
            """The owner's workflow told the owners and waits for the deadline."""
            audit = victim.get(f"/v1/audit?subject={host}&limit=100")["events"]
            return any(
                e["kind"] == "maintenance.scheduled"
                and e["detail"].get("maintenance_id") == started["id"]
                for e in audit
            )

        wait_for(f"{victim.member_id} waiting for the deadline", waiting, 15, 0.05)
        struck = clab.client.inject("controller-kill", host)
        assert struck["member_id"] == victim.member_id, struck
        killed_at = float(struck["time"])
        victim.proc.wait(timeout=10)
        assert killed_at < started["deadline_at"], "killed after the deadline: nothing waited"

        def reowned() -> tuple[Controller, int] | None:
            found = owner(others, host)
            return found if found is not None and found[1] > epoch else None

        heir, new_epoch = wait_for(f"{host} re-owned", reowned, MEMBERSHIP_TIMEOUT + 10, 0.02)
        reowned_after = time.time() - killed_at
        bystander = next(c for c in others if c is not heir)

        def over() -> dict[str, Any] | None:
            m = maintenance_of(heir, host)
            return m if m["state"] not in ("SCHEDULED", "MIGRATING") else None

        done = wait_for(f"{host}'s maintenance to end its migrations", over, 120, 0.2)
        over_after = time.time() - killed_at
        clab.no_server_runs_twice()
    assert done["state"] == "READY", json.dumps(done, indent=1)
    by_id = {s["server_id"]: s for s in done["servers"]}
    assert {sid for sid, s in by_id.items() if s["result"] == "migrated"} == ha, by_id
    assert {sid for sid, s in by_id.items() if s["result"] == "left"} == plain, by_id
    # Once each: one request, after the deadline (no owner answered), and each runs
    # on another host now.
    assert all(by_id[sid]["attempts"] == 1 for sid in ha), by_id
    assert all(by_id[sid]["started_at"] >= started["deadline_at"] for sid in ha), by_id
    now = {s["id"]: s for s in clab.status()["servers"]}
    for sid in ha:
        assert now[sid]["host"] not in (host, None) and now[sid]["status"] == "ACTIVE", now[sid]
        assert by_id[sid]["to_host"] == now[sid]["host"]
    assert all(now[sid]["host"] == host for sid in plain)
    assert watch.samples > 5 and watch.twice == [], f"servers on two hosts: {watch.twice[:3]}"
    lives = as_json(clab, "--os-compute-api-version", "2.23", "server", "migration", "list",
                    "--host", host, "--type", "live-migration")  # fmt: skip
    after = [m for m in lives if epoch_seconds(m["Created At"] + "+00:00") >= t0]
    assert sorted(m["Server UUID"] for m in after) == sorted(ha), after
    # The heir took its workflow over (the bystander did not) and finished it, once.
    took = f"took over 1 recovery workflows: maintenance-{started['id']}"
    assert took in heir.log.read_text() and took not in bystander.log.read_text()
    audit = heir.get(f"/v1/audit?subject={host}&limit=500")["events"]
    ready = [e for e in audit if e["kind"] == "maintenance.ready"]
    assert len(ready) == 1 and ready[0]["detail"]["maintenance_id"] == started["id"], ready

    # Neither start nor end through a controller that does not own the host.
    for method, payload in (("POST", {"reason": "again"}), ("DELETE", None)):
        why = refused_by(bystander, method, host, payload)
        assert NOT_OWNER in why and host in why, why
    assert maintenance_of(heir, host)["state"] == "READY"
    # Ended through its owner: the host back in service for the next tests.
    r = httpx.delete(
        f"{heir.url}/v1/hosts/{host}/maintenance", headers={"X-Auth-Token": heir.token}, timeout=30
    )
    assert r.status_code == 200, r.text
    ended = r.json()
    assert ended["state"] == "ENDED" and ended["service_enabled"], ended
    assert clab.host(host)["nova"]["status"] == "enabled"
    assert heir.host(host)["lifecycle"]["state"] == "UP"
    victim.restart()
    wait_for("every controller back with its share", lambda: shared_out(ctls), 60)
    print(
        f"\n{host}: maintenance started through {victim.member_id} (epoch {epoch}), killed "
        f"{started['deadline_at'] - killed_at:.1f} s before its deadline; {heir.member_id} "
        f"owned it (epoch {new_epoch}) {reowned_after * 1000:.0f} ms after the kill and "
        f"ended its migrations {over_after:.1f} s after it: {len(ha)} HA servers migrated, "
        f"{len(plain)} left"
    )


def test_a_killed_owner_s_recovery_is_finished_by_another_controller(
    clab: RunningLab, ctls: list[Controller]
) -> None:
    host = "host1"
    ha = ha_on(clab, host)
    # Its own three, and any the earlier tests' evacuations brought it.
    assert len(ha) >= 3, ha
    first = owner(ctls, host)
    assert first is not None
    victim, epoch = first
    t0 = time.time()
    with TwoHostWatch(clab.client) as watch:
        rec, killed_at = strike_once_fenced(clab, victim, host, "controller-kill", t0)
        victim.proc.wait(timeout=10)
        asked = [e["result"] for e in rec["evacuations"]]
        print(
            f"\n{victim.member_id} killed in state {rec['state']} ({len(asked)} evacuations "
            f"recorded: {asked}), {killed_at - t0:.2f} s after T00"
        )
        survivors = [c for c in ctls if c is not victim]

        def reowned() -> tuple[Controller, int] | None:
            found = owner(survivors, host)
            return found if found is not None and found[1] > epoch else None

        heir, new_epoch = wait_for(f"{host} re-owned", reowned, MEMBERSHIP_TIMEOUT + 10, 0.02)
        reowned_after = time.time() - killed_at

        def resumed() -> float | None:
            """When the heir first acted on the recovery, under its epoch."""
            events = heir.get(f"/v1/audit?subject={host}&limit=500")["events"]
            acts = [
                epoch_seconds(e["at"])
                for e in events
                if e["kind"].startswith("host.recovery.")
                and e["actor"] == heir.member_id
                and e["detail"].get("epoch") == new_epoch
            ]
            return min(acts) if acts else None

        resumed_at = wait_for("the recovery resumed by the heir", resumed, 30, 0.05)

        def ended() -> dict[str, Any] | None:
            r = recovery_of(heir, host, t0)
            return r if r is not None and r["state"] in ENDED else None

        done = wait_for(f"{host}'s recovery to end", ended, 120, 0.2)
        finished_after = time.time() - killed_at
    print(
        f"{host}: {victim.member_id} (epoch {epoch}) killed; {heir.member_id} owned it "
        f"(epoch {new_epoch}) {reowned_after * 1000:.0f} ms after the kill, resumed the "
        f"recovery {(resumed_at - killed_at) * 1000:.0f} ms after it, and the recovery "
        f"ended {finished_after:.1f} s after it (membership timeout {MEMBERSHIP_TIMEOUT} s)"
    )
    assert done["state"] == "COMPLETED", json.dumps(done, indent=1)
    assert done["detail"]["fencing"]["confirmed"]
    # Every HA server evacuated exactly once: one record each, and each runs elsewhere.
    rows = heir.get(f"/v1/history?host={host}&limit=1000")["evacuations"]
    assert sorted(r["server_id"] for r in rows) == sorted(s["id"] for s in ha), rows
    assert all(r["result"] in ("recovered", "already-moved") for r in rows), rows
    assert sorted(e["server_id"] for e in done["evacuations"]) == sorted(s["id"] for s in ha)
    now = {s["id"]: s for s in clab.status()["servers"]}
    for s in ha:
        assert now[s["id"]]["host"] != host and now[s["id"]]["status"] == "ACTIVE", now[s["id"]]
    assert len(heir.get(f"/v1/recoveries?host={host}")["recoveries"]) == 1
    assert len([i for i in heir.get(f"/v1/incidents?host={host}")["incidents"]]) == 1
    assert watch.samples > 5 and watch.twice == [], f"servers on two hosts: {watch.twice[:3]}"
    # Who owned host1 when, as the audit log says.
    audit = heir.get(f"/v1/audit?subject={host}&limit=500")["events"]
    owners = [e["detail"]["to"] for e in reversed(audit) if e["kind"] == "host.owner"]
    assert owners[-2:] == [victim.member_id, heir.member_id], owners
    assert reowned_after < MEMBERSHIP_TIMEOUT + 3


def test_an_owner_paused_mid_recovery_does_nothing_more_once_woken(
    clab: RunningLab, ctls: list[Controller]
) -> None:
    """The owner of a crashed host is paused (SIGSTOP) right after it fenced the host,
    for longer than the membership timeout: another controller finishes the recovery;
    woken, the paused one records no effect on the host (its steps find their epoch
    stale and stand down), restarts afresh and rejoins."""
    host = "host3"
    live = [c for c in ctls if c.proc.poll() is None]
    ha = ha_on(clab, host)
    first = owner(live, host)
    assert first is not None and ha, (first, ha)
    sleeper, _ = first
    t0 = time.time()
    with TwoHostWatch(clab.client) as watch:
        rec, paused_at = strike_once_fenced(clab, sleeper, host, "controller-pause", t0)
        others = [c for c in live if c is not sleeper]
        try:

            def finished() -> tuple[Controller, dict[str, Any]] | None:
                for c in others:
                    r = recovery_of(c, host, t0)
                    if r is not None and r["state"] in ENDED:
                        return c, r
                return None

            heir, done = wait_for(f"{host}'s recovery finished by another", finished, 120, 0.2)
            # Asleep for 10 s at least, as the acceptance asks, before it wakes.
            wait_for("ten seconds of sleep", lambda: time.time() - paused_at >= 10, 15, 0.5)
        finally:
            clab.client.heal("controller-pause", str(sleeper.member_id))
        wait_for(
            "it says it was replaced",
            lambda: "was replaced while it was not heard from" in sleeper.log.read_text(),
            30,
        )
        wait_for("back, afresh, with its share", lambda: shared_out(live), 60)
    assert done["state"] == "COMPLETED", json.dumps(done, indent=1)
    audit = heir.get(f"/v1/audit?subject={host}&limit=1000")["events"]
    after_pause = [
        e
        for e in audit
        if e["actor"] == sleeper.member_id
        and epoch_seconds(e["at"]) > paused_at
        and (e["kind"].startswith("host.recovery.") or e["kind"] == "host.actions")
    ]
    assert after_pause == [], after_pause  # no effect on the host after the pause
    refused = [
        e for e in audit if e["kind"] == "host.stale_owner" and e["actor"] == sleeper.member_id
    ]
    rows = heir.get(f"/v1/history?host={host}&limit=1000")["evacuations"]
    assert sorted(r["server_id"] for r in rows) == sorted(s["id"] for s in ha), rows
    assert len(heir.get(f"/v1/recoveries?host={host}")["recoveries"]) == 1
    assert watch.samples > 5 and watch.twice == [], f"servers on two hosts: {watch.twice[:3]}"
    print(
        f"\n{host}: {sleeper.member_id} paused {paused_at - t0:.2f} s after T00, in "
        f"{rec['state']}; {heir.member_id} finished the recovery; the sleeper, woken, "
        f"recorded no effect and had {len(refused)} steps refused"
    )

"""The dashboard in a real headless Chromium against a real `medevac serve` on a real
store: the pages show the store's incidents, recoveries, alarms and audit, and the
monitor's hosts (one heard through signed heartbeats, one never); a change arrives
without a reload; a reader has no action buttons; an admin's action is confirmed first;
a member sees its own project's alarms only."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import BrowserContext, expect

from medevac.inspector.incidents import Incident, IncidentState
from medevac.monitor.protocol import Checks, Datagram, DatagramKind, encode, host_key
from medevac.storage import Database
from medevac.storage.records import IncidentStore, RecoveryStore
from tests.browser import SEEN_WITHIN_MS, Tab, chromium, open_tab, shot, sign_in
from tests.conftest import ADMIN_TOKEN, MEMBER_TOKEN, READER_TOKEN, free_port, wait_healthy

OTHER_MEMBER_TOKEN = "member2-token-0123456789"
MASTER_KEY = b"d" * 64
HEARD, SILENT = "compute-1", "compute-2"
INCIDENT = "inc-" + "1" * 12
DONE, FAILED = "recover-" + INCIDENT, "recover-inc-" + "2" * 12


@dataclass
class Served:
    base: str
    db: Database
    output: Path

    def api(self, method: str, path: str, token: str = ADMIN_TOKEN, **kw: Any) -> httpx.Response:
        return httpx.request(
            method, self.base + path, headers={"X-Auth-Token": token}, timeout=10, **kw
        )

    def audit_kinds(self) -> list[str]:
        return [e["kind"] for e in self.api("GET", "/v1/audit").json()["events"]]

    def new_alarm(self, token: str, name: str) -> dict[str, Any]:
        body = {
            "name": name,
            "type": "event",
            "event_rule": {"event_type": "compute.instance.update"},
            "alarm_actions": ["http://127.0.0.1:9/hook"],
        }
        r = self.api("POST", "/v2/alarms", token, json=body)
        assert r.status_code == 201, r.text
        return dict(r.json())


def seed(db: Database) -> None:
    """What earlier faults left: a closed incident with its profile, its recovery with
    two servers moved, and another host's recovery whose fencing failed."""
    t = time.time() - 120
    inc = Incident(HEARD, "nova", t + 0.25, "trace-" + "a" * 10, id=INCIDENT)
    inc.faults = {"host:": t + 0.3}
    inc.verdicts = [
        {
            "kind": "HOST_DOWN",
            "host": HEARD,
            "subject": None,
            "at": t + 0.3,
            "evidence": {"last_heartbeat_sent_at": t, "bmc_power": "off"},
            "trace_id": inc.trace_id,
        }
    ]
    inc.actions = [
        {
            "kind": "force_down",
            "target": HEARD,
            "value": True,
            "ok": True,
            "attempts": 1,
            "started": t + 0.31,
            "ended": t + 0.36,
            "error": None,
        }
    ]
    inc.events = [
        {"at": t + 0.31, "types": ["compute.instance.update"], "count": 2, "deliveries": 2}
    ]
    inc.stamps = {
        "T01": t + 0.27,
        "V": t + 0.3,
        "T02": t + 0.3,
        "T06": t + 0.31,
        "T07": t + 0.312,
        "T08": t + 0.318,
        "T09": t + 0.325,
        "R1": t + 0.35,
        "T03": t + 0.36,
        "T04": t + 0.6,
        "T05": t + 0.7,
        "R2": t + 0.85,
        "R3": t + 4.6,
    }
    inc.recovery_id = DONE
    inc.recovery_ended_at = t + 4.6
    inc.state = IncidentState.CLOSED
    inc.closed_at = t + 60
    inc.closed_by = "released by ops"
    IncidentStore(db).save(inc.as_dict())
    recoveries = RecoveryStore(db)
    recoveries.put(DONE, INCIDENT, HEARD, 2, "FENCED", t + 0.35, {"fencing": {}})
    recoveries.put(DONE, INCIDENT, HEARD, 2, "EVACUATING", t + 0.8, {"planned": ["s-1", "s-2"]})
    for i, to in ((1, "compute-3"), (2, "compute-4")):
        recoveries.put_evacuation(
            DONE, f"s-{i}", f"web-{i}", HEARD, result="requested", at=t + 0.85, to_host=None
        )
        recoveries.put_evacuation(
            DONE,
            f"s-{i}",
            f"web-{i}",
            HEARD,
            result="recovered",
            at=t + 3 + i,
            to_host=to,
            attempts=1,
            ended=True,
        )
    recoveries.put(DONE, INCIDENT, HEARD, 2, "COMPLETED", t + 4.6, {"evacuated": 2}, True)
    failed_inc = FAILED.removeprefix("recover-")
    recoveries.put(FAILED, failed_inc, SILENT, 2, "FENCING", t + 200, {})
    recoveries.put(FAILED, failed_inc, SILENT, 2, "FENCING_FAILED", t + 205, {}, True)
    db.record_audit("recovery.fencing_failed", SILENT, "recovery", {"recovery_id": FAILED})


def heartbeats(port: int, stop: threading.Event) -> None:
    """compute-1's agent: a signed heartbeat every 0.2 s until ``stop``."""
    boot = os.urandom(16)
    key = host_key(MASTER_KEY, HEARD)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        seq = 0
        while not stop.wait(0.2):
            seq += 1
            d = Datagram(DatagramKind.HEARTBEAT, HEARD, seq, boot, time.time(), Checks())
            s.sendto(encode(d, key), ("127.0.0.1", port))


def config(tmp: Path, port: int, udp: int) -> Path:
    (tmp / "agent.key").write_bytes(MASTER_KEY)
    # No BMC answers on these ports: the hosts' power stays unknown.
    (tmp / "bmc.toml").write_text(
        "".join(f'[{h}]\nusername = "admin"\npassword = "unused"\n' for h in (HEARD, SILENT))
    )
    tokens = [
        ("ops", ADMIN_TOKEN, "admin", None),
        ("auditor", READER_TOKEN, "reader", None),
        ("tenant", MEMBER_TOKEN, "member", "p1"),
        ("tenant2", OTHER_MEMBER_TOKEN, "member", "p2"),
    ]
    lines = [
        f'agent_key_file = "{tmp / "agent.key"}"',
        f'bmc_secrets_file = "{tmp / "bmc.toml"}"',
        f"[api]\nport = {port}",
        f'[storage]\nurl = "sqlite:///{tmp / "c.db"}"',
        f"[monitor]\nlisten_port = {udp}\ninterval = 0.2",
        '[notifier]\naction_allow_networks = ["127.0.0.0/8"]',
    ]
    for name, token, role, project in tokens:
        lines.append(f'[[api.tokens]]\nname = "{name}"\ntoken = "{token}"\nrole = "{role}"')
        if project:
            lines.append(f'project_id = "{project}"')
    for host in (HEARD, SILENT):
        lines.append(f'[hosts.{host}]\nbmc_address = "127.0.0.1"\nbmc_port = {free_port()}')
    path = tmp / "medevac.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    tmp = tmp_path_factory.mktemp("dashboard")
    port, udp = free_port(), free_port(socket.SOCK_DGRAM)
    path = config(tmp, port, udp)
    db = Database(f"sqlite:///{tmp / 'c.db'}")
    db.migrate()
    seed(db)
    log = (tmp / "controller.log").open("wb")
    env = {**os.environ, "MEDEVAC_CONFIG": str(path)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "medevac", "serve"], env=env, stdout=log, stderr=subprocess.STDOUT
    )
    stop = threading.Event()
    beating = threading.Thread(target=heartbeats, args=(udp, stop), daemon=True)
    try:
        wait_healthy(port)
        beating.start()
        yield Served(f"http://127.0.0.1:{port}", db, tmp)
    finally:
        stop.set()
        proc.send_signal(signal.SIGTERM)
        proc.wait(20)
        log.close()
        db.dispose()
        assert proc.returncode == 0, (tmp / "controller.log").read_text()[-3000:]


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrowserContext]:
    with chromium(tmp_path_factory.mktemp("chromium-profile")) as context:
        yield context


@pytest.fixture(scope="module")
def alarms(served: Served) -> dict[str, dict[str, Any]]:
    return {
        "p1": served.new_alarm(MEMBER_TOKEN, "p1-web-down"),
        "p2": served.new_alarm(OTHER_MEMBER_TOKEN, "p2-db-down"),
    }


def test_the_pages_render_the_controllers_data(
    served: Served, browser: BrowserContext, alarms: dict[str, Any], tmp_path: Path
) -> None:
    tab = Tab(browser)
    page = tab.page
    sign_in(page, served.base, ADMIN_TOKEN)
    expect(page.locator("#who")).to_have_text("ops (admin)")

    heard = page.locator(f"#hosts-table tr[data-host={HEARD}]")
    expect(heard.locator("td[data-col=monitor]")).to_have_text("UP", timeout=SEEN_WITHIN_MS)
    silent = page.locator(f"#hosts-table tr[data-host={SILENT}]")
    expect(silent.locator("td[data-col=monitor]")).to_have_text("UNKNOWN")
    expect(silent).to_contain_text("never")
    shot(page, tmp_path, "hosts")

    open_tab(page, "incidents")
    row = page.locator(f"#incidents-table tr[data-incident={INCIDENT}]")
    expect(row).to_contain_text("CLOSED")
    row.locator("a").first.click()
    expect(page.locator("#incident-host")).to_have_text(HEARD)
    r3 = page.locator("#timeline tr[data-checkpoint=R3]")
    expect(r3).to_contain_text("all servers recovered")
    chart = page.locator("#profile-chart")
    expect(chart).to_be_visible()
    page.wait_for_function("document.getElementById('profile-chart').naturalWidth > 0")
    expect(page.locator("#actions")).to_contain_text("force_down")
    expect(page.locator("#events")).to_contain_text("compute.instance.update")
    shot(page, tmp_path, "incident")

    open_tab(page, "recoveries")
    done = page.locator(f"article.recovery[data-recovery={DONE}]")
    expect(done).to_contain_text("2/2 servers")
    expect(done.locator("progress")).to_have_attribute("value", "2")
    expect(done.locator("tr[data-server=s-1]")).to_contain_text("compute-3")
    expect(page.locator(f"article.recovery[data-recovery={FAILED}]")).to_contain_text(
        "FENCING_FAILED"
    )
    shot(page, tmp_path, "recoveries")

    open_tab(page, "alarms")
    for project in ("p1", "p2"):
        expect(page.locator(f"#alarms-table tr[data-project={project}]")).to_have_count(1)
    expect(page.locator("#alarm-history tr")).not_to_have_count(1)  # more than the header
    open_tab(page, "audit")
    expect(page.locator("#audit-table tr[data-kind='recovery.fencing_failed']")).to_have_count(1)
    tab.no_script_errors()


def test_a_change_appears_without_a_reload(
    served: Served, browser: BrowserContext, alarms: dict[str, Any]
) -> None:
    tab = Tab(browser)
    page = tab.page
    sign_in(page, served.base, READER_TOKEN)
    open_tab(page, "alarms")
    expect(page.locator("#alarms-table tbody tr")).not_to_have_count(0)
    page.evaluate("window.stillTheSamePage = true")
    alarm = served.new_alarm(MEMBER_TOKEN, f"late-{uuid.uuid4().hex[:6]}")
    expect(page.locator(f"#alarms-table tr[data-alarm='{alarm['alarm_id']}']")).to_have_count(
        1, timeout=SEEN_WITHIN_MS
    )
    assert page.evaluate("window.stillTheSamePage") is True
    tab.no_script_errors()


def test_a_reader_sees_no_action_buttons_and_the_server_refuses_its_actions(
    served: Served, browser: BrowserContext
) -> None:
    tab = Tab(browser)
    page = tab.page
    sign_in(page, served.base, READER_TOKEN)
    expect(page.locator(f"#hosts-table tr[data-host={HEARD}]")).to_be_visible()
    expect(page.locator("#hosts-table th")).not_to_contain_text(["Actions"])
    open_tab(page, "recoveries")
    expect(page.locator(f"article.recovery[data-recovery={FAILED}]")).to_be_visible()
    assert page.locator("button.act").count() == 0
    for method, path in (
        ("POST", f"/v1/hosts/{HEARD}/release"),
        ("POST", f"/v1/recoveries/{FAILED}/retry"),
    ):
        assert served.api(method, path, READER_TOKEN).status_code == 403
    tab.no_script_errors()


def test_an_admins_action_is_confirmed_first_and_a_refusal_is_shown(
    served: Served, browser: BrowserContext
) -> None:
    tab = Tab(browser)
    page = tab.page
    sign_in(page, served.base, ADMIN_TOKEN)
    open_tab(page, "recoveries")
    retry = page.locator(f"article.recovery[data-recovery={FAILED}] button[data-action=retry]")
    before = served.audit_kinds()

    retry.click()
    expect(page.locator("#confirm")).to_be_visible()
    expect(page.locator("#confirm-title")).to_contain_text(SILENT)
    page.click("#confirm-cancel")
    expect(page.locator("#confirm")).to_be_hidden()

    with page.expect_response(lambda r: r.url.endswith(f"/v1/recoveries/{FAILED}/retry")) as sent:
        retry.click()
        page.click("#confirm-ok")
    # The host's lifecycle is UP here: the server refuses, the page says why.
    assert sent.value.status == 409
    expect(page.locator("#toast")).to_contain_text("not FENCING_FAILED")
    assert served.audit_kinds() == before  # nothing was done, nothing audited

    open_tab(page, "hosts")
    page.locator(f"tr[data-host={HEARD}] button[data-action=maintenance-start]").click()
    page.fill("#confirm-fields input[name=reason]", "firmware upgrade")
    page.click("#confirm-ok")
    # Before planned maintenance lands on the controller the page says so; after, the
    # request succeeds.
    expect(page.locator("#toast")).to_contain_text(
        re.compile("maintenance is not available on this controller|: done")
    )
    tab.no_script_errors()


def test_a_member_sees_only_its_projects_alarms(
    served: Served, browser: BrowserContext, alarms: dict[str, Any], tmp_path: Path
) -> None:
    tab = Tab(browser)
    page = tab.page
    sign_in(page, served.base, MEMBER_TOKEN)
    expect(page.locator("#tabs a")).to_have_count(1)
    expect(page.locator("#page")).to_have_attribute("data-page", "alarms")
    mine = page.locator(f"#alarms-table tr[data-alarm='{alarms['p1']['alarm_id']}']")
    expect(mine).to_have_count(1)
    expect(page.locator("#alarms-table tbody tr[data-project=p2]")).to_have_count(0)
    expect(page.locator("#page")).not_to_contain_text("p2-db-down")
    history = page.locator("#alarm-history tbody tr")
    expect(history).not_to_have_count(0)
    other = alarms["p2"]["alarm_id"]
    assert page.locator(f"#alarm-history tr[data-alarm='{other}']").count() == 0
    # Another project's alarm made now reaches neither the page nor its stream.
    served.new_alarm(OTHER_MEMBER_TOKEN, "p2-late")
    served.new_alarm(MEMBER_TOKEN, "p1-late")
    expect(page.locator("#alarms-table")).to_contain_text("p1-late", timeout=SEEN_WITHIN_MS)
    expect(page.locator("#page")).not_to_contain_text("p2-late")
    shot(page, tmp_path, "member-alarms")
    tab.no_script_errors()


def test_the_pages_need_no_token_and_hold_no_data(served: Served) -> None:
    r = httpx.get(served.base + "/ui/", timeout=10)
    assert r.status_code == 200 and "Sign in" in r.text
    assert "script-src 'self'" in r.headers["content-security-policy"]
    assert httpx.get(served.base + "/ui/js/app.js", timeout=10).status_code == 200
    assert httpx.get(served.base + "/v1/stream", timeout=10).status_code == 401

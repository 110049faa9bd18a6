"""The dashboard in a real headless Chromium on the lab: a host crash appears on the
open page without a reload, its recovery's fencing fails while the BMC is cut off, and
an admin retries it from the page (confirmed, audited) once the BMC answers: the page
follows the evacuations to the end."""

from __future__ import annotations

import re
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect

from tests.browser import SEEN_WITHIN_MS, Tab, chromium, open_tab, shot, sign_in
from tests.conftest import wait_for
from tests.lab.conftest import Controller, RunningLab, start_lab

# The screenshot the README shows, refreshed by this test.
README_SHOT = Path(__file__).resolve().parents[2] / "test-output" / "dashboard-recoveries.png"
RECOVERY_WITHIN_MS = 120_000


def bmc_answers(lab: RunningLab, host: str) -> bool:
    return lab.ipmitool(host, "chassis", "power", "status").returncode == 0


@pytest.fixture(scope="module")
def dlab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningLab]:
    yield from start_lab(tmp_path_factory.mktemp("dashboard-lab"), hosts=4, servers_per_host=3)


@pytest.fixture(scope="module")
def ctl(dlab: RunningLab) -> Iterator[Controller]:
    controller = Controller.start(
        dlab,
        # Fencing gives up within about 1.5 s while the BMC does not answer.
        MEDEVAC_RECOVERY__CHECK_INTERVAL="0.25",
        MEDEVAC_RECOVERY__CHECK_MAX_COUNT="6",
    )
    try:
        yield controller
    finally:
        if controller.proc.poll() is None:
            controller.stop()


def test_a_crash_shows_live_and_an_admin_retries_the_recovery_its_fencing_failed(
    dlab: RunningLab, ctl: Controller, tmp_path: Path
) -> None:
    host = "host2"
    admin = ctl.get("/v1/whoami")["name"]
    with chromium(tmp_path / "profile") as browser:
        tab = Tab(browser)
        page = tab.page
        sign_in(page, ctl.url, ctl.token)
        open_tab(page, "incidents")
        page.evaluate("window.stillTheSamePage = true")

        dlab.client.inject("bmc-unreachable", host)
        crashed = time.time()
        dlab.client.inject("host-crash", host)
        row = page.locator(f"#incidents-table tr[data-host={host}]")
        expect(row).to_have_count(1, timeout=SEEN_WITHIN_MS)
        shown = time.time()
        opened = ctl.get(f"/v1/incidents?host={host}")["incidents"][0]["opened_at"]
        print(
            f"incident shown {shown - opened:.2f} s after it opened "
            f"({shown - crashed:.2f} s after the crash)"
        )

        open_tab(page, "recoveries")
        card = page.locator(f"article.recovery[data-host={host}]").first
        expect(card).to_have_attribute("data-state", "FENCING_FAILED", timeout=SEEN_WITHIN_MS * 3)
        expect(card).to_contain_text("nothing moved")
        open_tab(page, "hosts")
        lifecycle = page.locator(f"#hosts-table tr[data-host={host}] td[data-col=lifecycle]")
        expect(lifecycle.locator(".badge")).to_have_text("FENCING_FAILED")
        shot(page, tmp_path, "hosts-fencing-failed")

        dlab.client.heal("bmc-unreachable", host)
        # The operator sees the BMC answer again before retrying.
        wait_for(f"{host}'s BMC to answer", lambda: bmc_answers(dlab, host), 30, 0.5)
        open_tab(page, "recoveries")
        latest = page.locator(f"article.recovery[data-host={host}]").first
        retried: dict[str, Any] = {}
        for attempt in range(1, 4):
            latest.locator("button[data-action=retry]").click()
            expect(page.locator("#confirm")).to_be_visible()
            with page.expect_response(lambda r: r.url.endswith("/retry")) as sent:
                page.click("#confirm-ok")
            assert sent.value.status == 200, sent.value.text()
            retried = sent.value.json()
            assert retried["recovery_id"].endswith(f"-retry{attempt}"), retried
            again = page.locator(f"article.recovery[data-recovery='{retried['recovery_id']}']")
            expect(again).to_have_attribute(
                "data-state", re.compile("COMPLETED|FENCING_FAILED"), timeout=RECOVERY_WITHIN_MS
            )
            if again.get_attribute("data-state") == "COMPLETED":
                break
            body = ctl.get(f"/v1/recoveries/{retried['recovery_id']}")
            print(f"retry {attempt}: fencing failed again: {body['detail'].get('fencing')}")
        expect(again).to_have_attribute("data-state", "COMPLETED")
        bar = again.locator("progress")
        assert bar.get_attribute("value") == bar.get_attribute("max") != "0"
        expect(again.locator("tr[data-server]")).not_to_have_count(0)
        assert page.evaluate("window.stillTheSamePage") is True
        shot(page, tmp_path, "recoveries-after-retry")
        README_SHOT.parent.mkdir(exist_ok=True)
        shutil.copy(tmp_path / "recoveries-after-retry.png", README_SHOT)

        audit = ctl.get(f"/v1/audit?subject={host}&limit=200")["events"]
        done = [e for e in audit if e["kind"] == "recovery.retried"]
        assert len(done) == attempt and {e["actor"] for e in done} == {admin}, done
        kinds = [e["kind"] for e in reversed(audit)]  # oldest first
        assert kinds.index("recovery.retried") < kinds.index("recovery.fenced")
        open_tab(page, "audit")
        expect(page.locator("#audit-table tr[data-kind='recovery.retried']")).to_have_count(attempt)

        # Powered on again, the host is heard from and waits for an operator's release.
        on = dlab.ipmitool(host, "chassis", "power", "on")
        assert on.returncode == 0, on.stderr
        open_tab(page, "hosts")
        row = page.locator(f"#hosts-table tr[data-host={host}]")
        expect(row.locator("td[data-col=lifecycle]")).to_contain_text(
            "AWAITING_RELEASE", timeout=60_000
        )
        shot(page, tmp_path, "hosts-awaiting-release")

        def release() -> bool:
            # Nova refuses while the host's nova-compute has not cleaned up the servers
            # evacuated from it: the page says so, and the operator asks again.
            row.locator("button[data-action=release]").click()
            expect(page.locator("#confirm")).to_be_visible()
            with page.expect_response(lambda r: r.url.endswith("/release")) as sent:
                page.click("#confirm-ok")
            return sent.value.status == 200

        wait_for(f"{host} released from the page", release, 90, 1.0)
        lifecycle_badge = row.locator("td[data-col=lifecycle] .badge")
        expect(lifecycle_badge).to_have_text("UP", timeout=SEEN_WITHIN_MS)
        released = [
            e
            for e in ctl.get(f"/v1/audit?subject={host}&limit=200")["events"]
            if e["kind"] == "host.released"
        ]
        assert len(released) == 1 and released[0]["actor"] == admin, released
        tab.no_script_errors()
    dlab.no_server_runs_twice()

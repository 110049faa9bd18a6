"""Keystone tokens in medevac's API, on a lab with a real Keystone
(`lab up --identity keystone`): each lab user signs in with its password through
keystoneauth and calls a real `medevac serve`, and signs in to its dashboard in
Debian's Chromium; the lab's Nova and Neutron, and the real `openstack` CLI, take the
same tokens."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from keystoneauth1 import session as ks_session
from keystoneauth1.identity import v3
from playwright.sync_api import expect

from medevac.api.auth import KeystoneValidator
from medevac.api.errors import ApiError
from medevac.config import KeystoneConfig
from medevac.lab.consumer import doctor_alarm
from medevac.lab.layout import find_lab_python
from tests.browser import SEEN_WITHIN_MS, Tab, chromium, open_tab, shot
from tests.browser import sign_in as sign_in_to_dashboard
from tests.conftest import free_port, wait_for
from tests.lab.conftest import Controller, RunningLab, as_json, openstack, start_lab

CACHE_SECONDS = 2.0


@pytest.fixture(scope="module")
def ks_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningLab]:
    if not (find_lab_python().parent / "keystone-manage").exists():
        pytest.fail("the lab venv has no Keystone: run `make lab-venv` (requirements/lab.lock)")
    yield from start_lab(
        tmp_path_factory.mktemp("kslab"), hosts=2, servers_per_host=2, identity="keystone"
    )


@pytest.fixture(scope="module")
def controller(ks_lab: RunningLab) -> Iterator[Controller]:
    # A short cache, so a revoked token is refused within the test.
    ctl = Controller.start(ks_lab, MEDEVAC_KEYSTONE__CACHE_SECONDS=str(CACHE_SECONDS))
    try:
        yield ctl
    finally:
        ctl.stop()


def user(lab: RunningLab, name: str) -> dict[str, str]:
    found: dict[str, str] = next(u for u in lab.info["keystone"]["users"] if u["name"] == name)
    return found


def sign_in(lab: RunningLab, name: str) -> ks_session.Session:
    u = user(lab, name)
    auth = v3.Password(
        auth_url=lab.info["keystone"]["auth_url"],
        username=u["name"],
        password=u["password"],
        project_name=u["project"],
        user_domain_name="Default",
        project_domain_name="Default",
    )
    return ks_session.Session(auth=auth)


def token(lab: RunningLab, name: str) -> str:
    return str(sign_in(lab, name).get_token())


def call(ctl: Controller, method: str, path: str, tok: str, body: Any = None) -> httpx.Response:
    return httpx.request(
        method, ctl.url + path, json=body, headers={"X-Auth-Token": tok}, timeout=30
    )


def project_id(lab: RunningLab, name: str) -> str:
    return str(lab.info["keystone"]["projects"][name])


def server_of(lab: RunningLab, project: str) -> dict[str, Any]:
    return next(s for s in lab.status()["servers"] if s["project_id"] == project_id(lab, project))


def test_each_user_is_who_keystone_says(ks_lab: RunningLab, controller: Controller) -> None:
    seen = {}
    for name in ("admin", "reader", "member-tenant-a", "member-tenant-b"):
        r = call(controller, "GET", "/v1/whoami", token(ks_lab, name))
        assert r.status_code == 200, r.text
        seen[name] = r.json()
    assert seen["admin"] == {"name": "keystone:admin", "role": "admin", "project_id": None}
    assert seen["reader"] == {"name": "keystone:reader", "role": "reader", "project_id": None}
    for tenant in ("tenant-a", "tenant-b"):
        assert seen[f"member-{tenant}"] == {
            "name": f"keystone:member-{tenant}",
            "role": "member",
            "project_id": project_id(ks_lab, tenant),
        }
    # medevac's own service user validates tokens; it holds no role of the API.
    r = call(controller, "GET", "/v1/whoami", token(ks_lab, "medevac"))
    assert r.status_code == 403
    assert "roles give no access" in r.json()["error"]["message"]


def test_roles_decide_what_each_may_do(ks_lab: RunningLab, controller: Controller) -> None:
    admin, reader = token(ks_lab, "admin"), token(ks_lab, "reader")
    member_a, member_b = token(ks_lab, "member-tenant-a"), token(ks_lab, "member-tenant-b")
    sink = "http://127.0.0.1:9/failure"
    a_server, b_server = server_of(ks_lab, "tenant-a"), server_of(ks_lab, "tenant-b")

    r = call(controller, "POST", "/v2/alarms", admin, doctor_alarm("x", "by-admin", sink))
    assert r.status_code == 201, r.text
    admin_alarm = r.json()["alarm_id"]
    r = call(controller, "POST", "/v2/alarms", member_a, doctor_alarm(a_server["id"], "a", sink))
    assert r.status_code == 201, r.text
    alarm_a = r.json()["alarm_id"]
    assert r.json()["project_id"] == project_id(ks_lab, "tenant-a")
    r = call(controller, "POST", "/v2/alarms", member_b, doctor_alarm(b_server["id"], "b", sink))
    assert r.status_code == 201, r.text
    alarm_b = r.json()["alarm_id"]

    # The reader reads everything and changes nothing.
    r = call(controller, "GET", "/v2/alarms", reader)
    assert r.status_code == 200
    assert {admin_alarm, alarm_a, alarm_b} <= {a["alarm_id"] for a in r.json()}
    r = call(controller, "POST", "/v2/alarms", reader, doctor_alarm("x", "by-reader", sink))
    assert r.status_code == 403, r.text
    assert call(controller, "DELETE", f"/v2/alarms/{alarm_a}", reader).status_code == 403

    # A tenant's member sees its own project's alarms only.
    r = call(controller, "GET", "/v2/alarms", member_a)
    assert r.status_code == 200
    assert [a["alarm_id"] for a in r.json()] == [alarm_a]
    assert call(controller, "GET", f"/v2/alarms/{alarm_b}", member_a).status_code == 404
    assert call(controller, "DELETE", f"/v2/alarms/{alarm_b}", member_a).status_code == 404
    # And the admin can do everything.
    assert call(controller, "DELETE", f"/v2/alarms/{alarm_b}", admin).status_code == 204


def test_a_revoked_token_is_refused_once_its_cache_entry_expires(
    ks_lab: RunningLab, controller: Controller
) -> None:
    tok = token(ks_lab, "member-tenant-a")
    assert call(controller, "GET", "/v1/whoami", tok).status_code == 200
    admin = sign_in(ks_lab, "admin")
    revoked = admin.delete(
        ks_lab.info["keystone"]["auth_url"] + "/auth/tokens", headers={"X-Subject-Token": tok}
    )
    assert revoked.status_code == 204
    refused = wait_for(
        "the revoked token to be refused",
        lambda: (r := call(controller, "GET", "/v1/whoami", tok)).status_code == 401 and r,
        CACHE_SECONDS + 10,
    )
    assert "Keystone does not accept it" in refused.json()["error"]["message"]


def test_a_garbage_token_is_refused(ks_lab: RunningLab, controller: Controller) -> None:
    for garbage in ("garbage", "gAAAAA" + "x" * 180):
        r = call(controller, "GET", "/v2/alarms", garbage)
        assert r.status_code == 401
        assert "invalid token" in r.json()["error_message"]["faultstring"]
    r = call(controller, "GET", "/v1/whoami", "garbage")
    assert r.status_code == 401
    assert r.json()["error"]["message"].startswith("invalid token")


def test_keystone_unreachable_or_refusing_medevac_is_503(ks_lab: RunningLab) -> None:
    service = user(ks_lab, "medevac")
    tok = token(ks_lab, "member-tenant-a")

    def answer(**config: Any) -> ApiError:
        validator = KeystoneValidator(KeystoneConfig(**config))
        with pytest.raises(ApiError) as caught:
            asyncio.run(validator.principal(tok))
        return caught.value

    down = answer(auth_url=f"http://127.0.0.1:{free_port()}/v3", password="whatever-it-is")
    assert down.status == 503 and "unreachable" in down.message
    wrong = answer(auth_url=ks_lab.info["keystone"]["auth_url"], password="not-the-password")
    assert wrong.status == 503 and "refused medevac's service user" in wrong.message
    for e in (down, wrong):
        assert tok not in e.message and service["password"] not in e.message


def test_no_token_or_password_in_the_controllers_log(
    ks_lab: RunningLab, controller: Controller
) -> None:
    tok = token(ks_lab, "reader")
    assert call(controller, "GET", "/v1/whoami", tok).status_code == 200
    call(controller, "GET", "/v1/whoami", "garbage-token-that-should-not-be-logged")
    log = Path(controller.log).read_text()
    for secret in (
        tok,
        "garbage-token-that-should-not-be-logged",
        *(u["password"] for u in ks_lab.info["keystone"]["users"]),
    ):
        assert secret not in log


def test_the_dashboard_takes_keystone_tokens_and_shows_each_role_what_it_may(
    ks_lab: RunningLab, controller: Controller, tmp_path: Path
) -> None:
    sink = "http://127.0.0.1:9/failure"
    members = {t: token(ks_lab, f"member-{t}") for t in ("tenant-a", "tenant-b")}
    admin = token(ks_lab, "admin")
    made: dict[str, str] = {}

    def new_alarm(tenant: str, name: str) -> str:
        alarm = doctor_alarm(server_of(ks_lab, tenant)["id"], name, sink)
        r = call(controller, "POST", "/v2/alarms", members[tenant], alarm)
        assert r.status_code == 201, r.text
        assert r.json()["project_id"] == project_id(ks_lab, tenant)
        made[name] = r.json()["alarm_id"]
        return made[name]

    hosts = sorted(ks_lab.info["hosts"])
    try:
        alarm_a, alarm_b = new_alarm("tenant-a", "ui-a"), new_alarm("tenant-b", "ui-b")
        with chromium(tmp_path / "profile") as browser:
            # The reader: every host, and no button to act on any.
            tab = Tab(browser)
            page = tab.page
            sign_in_to_dashboard(page, controller.url, token(ks_lab, "reader"))
            expect(page.locator("#who")).to_have_text("keystone:reader (reader)")
            expect(page.locator("#page")).to_have_attribute("data-page", "hosts")
            rows = page.locator("#hosts-table tbody tr")
            expect(rows).to_have_count(len(hosts), timeout=SEEN_WITHIN_MS)
            assert sorted(rows.evaluate_all("rs => rs.map(r => r.dataset.host)")) == hosts
            expect(page.locator("#hosts-table th")).not_to_contain_text(["Actions"])
            expect(page.locator("button.act")).to_have_count(0)
            shot(page, tmp_path, "reader-hosts")
            tab.no_script_errors()

            # The admin: the same hosts, each with its actions (none is clicked here).
            tab = Tab(browser)
            page = tab.page
            sign_in_to_dashboard(page, controller.url, admin)
            expect(page.locator("#who")).to_have_text("keystone:admin (admin)")
            expect(page.locator("#hosts-table th").last).to_have_text("Actions")
            for host in hosts:
                row = page.locator(f"#hosts-table tr[data-host={host}]")
                expect(row.locator("button.act")).not_to_have_count(0, timeout=SEEN_WITHIN_MS)
            shot(page, tmp_path, "admin-hosts")
            tab.no_script_errors()

            # A tenant's member: its project's alarms only, on the page and its stream.
            tab = Tab(browser)
            page = tab.page
            sign_in_to_dashboard(page, controller.url, members["tenant-a"])
            own = project_id(ks_lab, "tenant-a")
            expect(page.locator("#who")).to_have_text(
                f"keystone:member-tenant-a (member, project {own})"
            )
            expect(page.locator("#tabs a")).to_have_count(1)
            open_tab(page, "alarms")
            alarms = page.locator("#alarms-table tbody tr")
            expect(page.locator(f"#alarms-table tr[data-alarm='{alarm_a}']")).to_have_count(1)
            assert set(alarms.evaluate_all("rs => rs.map(r => r.dataset.project)")) == {own}
            expect(page.locator(f"#page [data-alarm='{alarm_b}']")).to_have_count(0)
            expect(page.locator("#page")).not_to_contain_text("ui-b-failure")
            new_alarm("tenant-b", "ui-b-late")
            new_alarm("tenant-a", "ui-a-late")
            expect(page.locator("#alarms-table")).to_contain_text(
                "ui-a-late-failure", timeout=SEEN_WITHIN_MS
            )
            expect(page.locator("#page")).not_to_contain_text("ui-b-late-failure")
            shot(page, tmp_path, "member-alarms")
            tab.no_script_errors()
    finally:
        for alarm_id in made.values():  # the module's other tests count each tenant's
            call(controller, "DELETE", f"/v2/alarms/{alarm_id}", admin)


# The lab's Nova and Neutron validate Keystone's tokens too (`lab up --identity
# keystone`), and the real `openstack` CLI signs in with clouds.yaml's passwords.


def test_openstack_cli_signs_in_to_the_lab_keystone(ks_lab: RunningLab) -> None:
    catalog = as_json(ks_lab, "catalog", "list", cloud="medevac-lab-user-admin")
    assert {"identity", "compute", "network", "alarming"} <= {c["Type"] for c in catalog}
    issued = as_json(ks_lab, "token", "issue", cloud="medevac-lab-tenant-a")
    assert issued["project_id"] == project_id(ks_lab, "tenant-a")

    everyone = ks_lab.status()["servers"]
    listed = as_json(ks_lab, "server", "list", "--all-projects", cloud="medevac-lab-user-admin")
    assert {s["ID"] for s in listed} == {s["id"] for s in everyone}
    for tenant in ("tenant-a", "tenant-b"):
        mine = as_json(ks_lab, "server", "list", cloud=f"medevac-lab-{tenant}")
        own = {s["id"] for s in everyone if s["project_id"] == project_id(ks_lab, tenant)}
        assert own and {s["ID"] for s in mine} == own
    other = next(s["id"] for s in everyone if s["project_id"] == project_id(ks_lab, "tenant-b"))
    refused = openstack(ks_lab, "server", "show", other, cloud="medevac-lab-tenant-a")
    assert refused.returncode != 0
    # Nova's roles hold in their project only: the reader (of project admin) sees no
    # tenant's servers there, where medevac's reader role reads every project.
    assert as_json(ks_lab, "server", "list", cloud="medevac-lab-user-reader") == []
    refused = openstack(ks_lab, "server", "show", other, cloud="medevac-lab-user-reader")
    assert refused.returncode != 0
    ports = as_json(ks_lab, "port", "list", cloud="medevac-lab-tenant-a")
    assert ports  # through the catalog's network endpoint, as the member


def test_nova_and_neutron_refuse_what_keystone_refuses(ks_lab: RunningLab) -> None:
    nova, neutron = ks_lab.info["nova_url"], ks_lab.info["neutron_url"] + "/v2.0"
    for garbage in ("garbage", "lab-admin", "lab-project-tenant-a"):
        for url in (nova + "/servers", neutron + "/ports"):
            r = httpx.get(url, headers={"X-Auth-Token": garbage}, timeout=30)
            assert r.status_code == 401, (url, garbage, r.text)
    assert httpx.get(nova + "/servers", timeout=30).status_code == 401  # no token at all
    member = token(ks_lab, "member-tenant-a")
    r = httpx.get(nova + "/servers", headers={"X-Auth-Token": member}, timeout=30)
    assert r.status_code == 200
    assert r.json()["servers"]


# Masakari's CLI finds medevac's Masakari API by the catalog alone (`instance-ha`,
# registered as devstack registers Masakari), signs in to Keystone, and medevac checks
# a segment's hosts against the lab's Nova.


def test_openstack_segment_commands_find_medevac_by_the_catalog(
    ks_lab: RunningLab, controller: Controller
) -> None:
    admin = "medevac-lab-user-admin"
    catalog = as_json(ks_lab, "catalog", "list", cloud=admin)
    assert "instance-ha" in {c["Type"] for c in catalog}
    seg = as_json(ks_lab, "segment", "create", "lab-seg", "rh_priority", "COMPUTE", cloud=admin)
    try:
        host = as_json(
            ks_lab, "segment", "host", "create", "host1", "COMPUTE", "SSH", seg["uuid"], cloud=admin
        )
        assert host["failover_segment_id"] == seg["uuid"]
        listed = as_json(ks_lab, "segment", "host", "list", seg["uuid"], cloud=admin)
        assert [h["name"] for h in listed] == ["host1"]
        unknown = openstack(
            ks_lab,
            "segment",
            "host",
            "create",
            "host99",
            "COMPUTE",
            "SSH",
            seg["uuid"],
            cloud=admin,
        )
        assert "could not be found" in unknown.stdout + unknown.stderr  # not one of Nova's
        assert [s["name"] for s in as_json(ks_lab, "segment", "list", cloud=admin)] == ["lab-seg"]
        refused = openstack(ks_lab, "segment", "list", cloud="medevac-lab-tenant-a")
        assert "403" in refused.stdout + refused.stderr or refused.returncode != 0
        openstack(ks_lab, "segment", "host", "delete", seg["uuid"], host["uuid"], cloud=admin)
    finally:
        openstack(ks_lab, "segment", "delete", seg["uuid"], cloud=admin)
    assert as_json(ks_lab, "segment", "list", cloud=admin) == []

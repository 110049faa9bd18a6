"""Aodh's own client (aodhclient: the library and the `aodh` CLI) against a real
`medevac serve` on loopback, authenticated with medevac's static tokens; its store on
SQLite, then on PostgreSQL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from aodhclient import exceptions
from aodhclient.v2 import client as aodh_client
from keystoneauth1 import session, token_endpoint

from tests.conftest import (
    ADMIN_TOKEN,
    MEMBER_TOKEN,
    READER_TOKEN,
    database_params,
    free_port,
    throwaway_postgres,
    wait_for,
)

OTHER_MEMBER_TOKEN = "member2-token-0123456789"  # project p2; MEMBER_TOKEN is p1's
AODH = Path(sys.executable).with_name("aodh")


@dataclass
class Server:
    url: str
    proc: subprocess.Popen[bytes]


@pytest.fixture(scope="module", params=database_params())
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    """A `medevac serve` on SQLite, then one on PostgreSQL (its recoveries' workflows on
    the same database, as configured by default)."""
    tmp = tmp_path_factory.mktemp("aodh")
    with ExitStack() as stack:
        if request.param == "sqlite":
            storage = f"sqlite:///{tmp / 'c.db'}"
        else:
            storage = stack.enter_context(throwaway_postgres())
        yield stack.enter_context(serving(tmp, storage))


@contextmanager
def serving(tmp: Path, storage: str) -> Iterator[Server]:
    port = free_port()
    tokens = [("ops", ADMIN_TOKEN, "admin", None), ("auditor", READER_TOKEN, "reader", None)]
    tokens += [("t1", MEMBER_TOKEN, "member", "p1"), ("t2", OTHER_MEMBER_TOKEN, "member", "p2")]
    config = f'[api]\nport = {port}\n[storage]\nurl = "{storage}"\n'
    config += '[notifier]\naction_allow_networks = ["127.0.0.0/8"]\n'
    for name, token, role, project in tokens:
        config += f'[[api.tokens]]\nname = "{name}"\ntoken = "{token}"\nrole = "{role}"\n'
        if project:
            config += f'project_id = "{project}"\n'
    (tmp / "medevac.toml").write_text(config)
    env = {**os.environ, "MEDEVAC_CONFIG": str(tmp / "medevac.toml")}
    log = (tmp / "serve.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "medevac", "serve"], env=env, stdout=log, stderr=log
    )
    url = f"http://127.0.0.1:{port}"

    def healthy() -> bool:
        try:
            return httpx.get(f"{url}/healthz").status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_for("the controller to answer /healthz", healthy, 30)
        yield Server(url, proc)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
        log.close()


def client(server: Server, token: str) -> Any:
    """aodhclient's library on a keystoneauth session holding a static token."""
    auth = token_endpoint.Token(endpoint=server.url, token=token)
    return aodh_client.Client(session=session.Session(auth=auth))


def aodh(server: Server, token: str, *args: str) -> subprocess.CompletedProcess[str]:
    """The `aodh` command, with keystoneauth's admin_token plugin."""
    env = {**os.environ, "OS_AUTH_TYPE": "admin_token", "OS_ENDPOINT": server.url}
    env["OS_TOKEN"] = token
    return subprocess.run(
        [str(AODH), *args], env=env, capture_output=True, text=True, timeout=60, check=False
    )


def aodh_json(server: Server, token: str, *args: str) -> Any:
    result = aodh(server, token, *args, "-f", "json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def unique(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:8]}"


def event_alarm(name: str, **overrides: Any) -> dict[str, Any]:
    body = {
        "name": name,
        "type": "event",
        "severity": "low",
        "alarm_actions": ["http://127.0.0.1:9/failure"],
        "event_rule": {
            "event_type": "compute.instance.update",
            "query": [{"field": "traits.state", "op": "eq", "type": "", "value": "error"}],
        },
    }
    body.update(overrides)
    return body


def names(alarms: list[dict[str, Any]]) -> set[str]:
    return {a["name"] for a in alarms}


def test_cli_creates_updates_by_whole_put_shows_and_deletes_by_name(server: Server) -> None:
    name = unique("vm1_failure")
    created = aodh_json(
        server,
        ADMIN_TOKEN,
        "alarm",
        "create",
        "--name",
        name,
        "--type",
        "event",
        "--event-type",
        "compute.instance.update",
        "--query",
        "traits.instance_id=vm1;traits.state=error",
        "--severity",
        "moderate",
        "--alarm-action",
        "http://127.0.0.1:9/failure",
    )
    assert created["severity"] == "moderate" and created["state"] == "insufficient data"
    alarm_id = created["alarm_id"]

    # `alarm update` GETs the alarm and PUTs it back whole, read-only fields included.
    updated = aodh_json(server, ADMIN_TOKEN, "alarm", "update", alarm_id, "--severity", "critical")
    assert updated["severity"] == "critical"
    assert updated["query"] == "traits.instance_id = vm1 AND\ntraits.state = error"
    assert updated["state_timestamp"] == created["state_timestamp"]
    # By name: found with a complex query on the name, then the same whole PUT.
    aodh_json(server, ADMIN_TOKEN, "alarm", "update", "--name", name, "--description", "vm1")
    aodh_json(server, ADMIN_TOKEN, "alarm", "update", name, "--enabled", "False")

    shown = aodh_json(server, ADMIN_TOKEN, "alarm", "show", "--name", name)
    assert (shown["alarm_id"], shown["severity"]) == (alarm_id, "critical")
    assert (shown["description"], shown["enabled"]) == ("vm1", False)
    assert shown["event_type"] == "compute.instance.update"

    result = aodh(server, ADMIN_TOKEN, "alarm", "delete", "--name", name)
    assert result.returncode == 0, result.stderr
    result = aodh(server, ADMIN_TOKEN, "alarm", "show", alarm_id)
    assert result.returncode == 1
    assert f"Alarm {alarm_id} not found" in result.stderr  # by id 404, then by name: none
    assert aodh(server, ADMIN_TOKEN, "alarm", "delete", "--name", name).returncode == 1


def test_cli_lists_with_filters_and_complex_queries(server: Server) -> None:
    mine = {unique(f"list_{n}"): n for n in ("a", "b", "c")}
    severities = dict(zip(mine, ("critical", "critical", "low"), strict=True))
    admin = client(server, ADMIN_TOKEN)
    for name, severity in severities.items():
        admin.alarm.create(event_alarm(name, severity=severity, enabled=mine[name] != "b"))
    a, b, c = mine

    def listed(*args: str) -> set[str]:
        return names(aodh_json(server, ADMIN_TOKEN, "alarm", "list", *args)) & set(mine)

    assert listed("--filter", "severity=critical") == {a, b}
    assert listed("--filter", "severity=critical", "--filter", "enabled=False") == {b}
    assert listed("--filter", f"name={c}") == {c}
    assert listed("--query", "severity=critical and enabled=true") == {a}
    assert listed("--query", f"name={c} or (severity=critical and not enabled=true)") == {b, c}
    assert listed("--query", "severity!=critical") >= {c}
    assert listed("--sort", "name:desc", "--limit", "1000") == set(mine)

    # Filters on fields Aodh does not filter on are refused, never ignored.
    result = aodh(server, ADMIN_TOKEN, "alarm", "list", "--filter", "colour=red")
    assert result.returncode == 1
    assert "Invalid input for field/attribute field. Value: 'colour'." in result.stderr
    assert "(HTTP 400)" in result.stderr
    result = aodh(server, ADMIN_TOKEN, "alarm", "list", "--query", "colour=red")
    assert result.returncode == 1
    assert "Filter expression not valid: unknown field 'colour'" in result.stderr


def test_cli_searches_history_and_lists_capabilities(server: Server) -> None:
    name = unique("history")
    admin = client(server, ADMIN_TOKEN)
    alarm_id = admin.alarm.create(event_alarm(name))["alarm_id"]
    admin.alarm.update(alarm_id, {"severity": "moderate"})
    admin.alarm.set_state(alarm_id, "ok")
    admin.alarm.delete(alarm_id)

    found = aodh_json(
        server, ADMIN_TOKEN, "alarm-history", "search", "--query", f"alarm_id={alarm_id}"
    )
    assert [h["type"] for h in found] == ["deletion", "state transition", "rule change", "creation"]
    found = aodh_json(
        server,
        ADMIN_TOKEN,
        "alarm-history",
        "search",
        "--query",
        f'alarm_id={alarm_id} and type="rule change"',
    )
    assert len(found) == 1 and json.loads(found[0]["detail"])["severity"] == "moderate"

    caps = aodh_json(server, READER_TOKEN, "capabilities", "list")
    assert caps["api"]["alarms:query:complex"] is True
    assert caps["api"]["alarms:history:query:complex"] is True
    assert caps["alarm_storage"] == {"storage:production_ready": True}


def test_library_orders_limits_and_reports_aodh_faults(server: Server) -> None:
    prefix = unique("order")
    admin = client(server, ADMIN_TOKEN)
    for n, severity in enumerate(("moderate", "critical", "low")):
        admin.alarm.create(event_alarm(f"{prefix}_{n}", severity=severity))
    body = {
        "filter": json.dumps({"=~": {"name": f"^{prefix}_"}}),
        "orderby": json.dumps([{"severity": "desc"}]),
        "limit": 2,
    }
    got = admin.api.post("v2/query/alarms", json=body).json()
    assert [a["severity"] for a in got] == ["critical", "moderate"]
    query = {
        "and": [
            {"in": {"name": [f"{prefix}_0", f"{prefix}_2"]}},
            {"not": {"=": {"severity": "low"}}},
        ]
    }
    assert names(admin.alarm.query(json.dumps(query))) == {f"{prefix}_0"}

    with pytest.raises(exceptions.BadRequest) as bad:
        admin.alarm.query(json.dumps({"and": [{"=": {"name": "x"}}]}))
    assert "Filter expression not valid" in bad.value.message
    with pytest.raises(exceptions.NotFound) as missing:
        admin.alarm.get(str(uuid.uuid4()))
    assert missing.value.message.endswith("not found")


def test_members_see_only_their_projects_alarms_through_every_route(server: Server) -> None:
    admin, reader = client(server, ADMIN_TOKEN), client(server, READER_TOKEN)
    p1, p2 = client(server, MEMBER_TOKEN), client(server, OTHER_MEMBER_TOKEN)
    shared = unique("same_name")
    ops = admin.alarm.create(event_alarm(unique("ops")))
    mine = p1.alarm.create(event_alarm(shared))
    theirs = p2.alarm.create(event_alarm(shared, severity="critical"))
    p2.alarm.update(theirs["alarm_id"], {"description": "p2's"})
    assert (mine["project_id"], theirs["project_id"]) == ("p1", "p2")

    def projects(alarms: list[dict[str, Any]]) -> set[str | None]:
        return {a["project_id"] for a in alarms}

    assert projects(p1.alarm.list()) == {"p1"}
    assert projects(p1.alarm.list(filters={"severity": "critical"})) <= {"p1"}
    assert projects(p1.alarm.query(None)) == {"p1"}
    assert [a["alarm_id"] for a in p1.alarm.query(json.dumps({"=": {"name": shared}}))] == [
        mine["alarm_id"]
    ]
    everything = {ops["alarm_id"], mine["alarm_id"], theirs["alarm_id"]}
    assert everything <= {a["alarm_id"] for a in reader.alarm.list()}
    assert everything <= {a["alarm_id"] for a in admin.alarm.query(None)}

    with pytest.raises(exceptions.Forbidden) as refused:
        p1.alarm.list(filters={"project_id": "p2"})
    assert refused.value.message == "Not Authorized to access project p2"
    with pytest.raises(exceptions.Forbidden):
        p1.alarm.list(filters={"all_projects": "true"})
    with pytest.raises(exceptions.Forbidden):
        p1.alarm.query(json.dumps({"=": {"project": "p2"}}))
    with pytest.raises(exceptions.Forbidden):
        p1.alarm_history.search(json.dumps({"=": {"on_behalf_of": "p2"}}))

    history = p1.alarm_history.search()
    assert history and {h["on_behalf_of"] for h in history} == {"p1"}
    assert theirs["alarm_id"] not in {h["alarm_id"] for h in history}
    assert {h["on_behalf_of"] for h in reader.alarm_history.search()} >= {None, "p1", "p2"}

    for call in (
        lambda: p1.alarm.get(theirs["alarm_id"]),
        lambda: p1.alarm.update(theirs["alarm_id"], {"severity": "low"}),
        lambda: p1.alarm.delete(theirs["alarm_id"]),
        lambda: p1.alarm_history.get(theirs["alarm_id"]),
        lambda: p1.alarm.get_state(ops["alarm_id"]),
    ):
        with pytest.raises(exceptions.NotFound):
            call()
    # By name, the CLI finds only the member's own alarm of that name.
    shown = aodh_json(server, MEMBER_TOKEN, "alarm", "show", "--name", shared)
    assert shown["alarm_id"] == mine["alarm_id"]
    result = aodh(server, MEMBER_TOKEN, "alarm", "delete", "--name", shared)
    assert result.returncode == 0, result.stderr
    assert p2.alarm.get(theirs["alarm_id"])["description"] == "p2's"

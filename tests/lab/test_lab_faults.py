"""Every lab fault kind has the effect real Nova gives it, and `heal` undoes it.

These run against the real Nova + Neutron of the lab through medevac's own cloud
driver and the real CLI. Hosts are spread over tests so each starts from a clean host.
"""

from __future__ import annotations

import pytest

from medevac.bmc.ipmi import BmcUnreachable, IpmiClient, IpmiTarget, PowerState
from medevac.cloud import ComputeServiceInUse
from tests.conftest import wait_for
from tests.lab.conftest import RunningLab

SERVICE_DOWN = 30.0  # generous bound over the lab's service_down_time of 5 s


def service(lab: RunningLab, host: str):
    return lab.run(lab.driver.get_compute_service(host))


def bmc(lab: RunningLab, host: str) -> IpmiClient:
    creds = lab.bmc_credentials(host)
    port = lab.host(host)["bmc"]["port"]
    return IpmiClient(IpmiTarget("127.0.0.1", port, creds["username"], creds["password"]))


def evacuate_all_and_wait(lab: RunningLab, host: str) -> list[str]:
    servers = lab.run(lab.driver.list_host_servers(host))
    assert servers, f"no servers on {host}"
    for s in servers:
        lab.run(lab.driver.evacuate(s.id))

    def moved() -> bool:
        now = [lab.run(lab.driver.get_server(s.id)) for s in servers]
        return all(x.status == "ACTIVE" and x.host not in (None, host) for x in now)

    wait_for(f"servers of {host} ACTIVE elsewhere", moved, 60, 0.2)
    return [s.id for s in servers]


def test_status_shows_hosts_servers_and_ports(lab: RunningLab) -> None:
    import json

    status = json.loads(lab.cli("lab", "status", "--json").stdout)
    assert [h["name"] for h in status["hosts"]] == [f"host{i}" for i in range(1, 6)]
    assert all(h["nova"]["state"] == "up" and h["bmc"]["power"] == "on" for h in status["hosts"])
    assert len(status["servers"]) == 10
    ports = {p["device_id"]: p for p in status["ports"]}
    for s in status["servers"]:
        assert s["status"] == "ACTIVE"
        assert ports[s["id"]]["host"] == s["host"]  # one port per server, bound to its host
        assert s["metadata"]["HA_Enabled"] in ("True", "False")
    assert {s["project_id"] for s in status["servers"]} == {"tenant-a", "tenant-b"}
    table = lab.cli("lab", "status").stdout
    assert "host1" in table and "servers" in table


def test_host_crash_evacuation_needs_force_down_then_host_returns_clean(lab: RunningLab) -> None:
    host = "host1"
    servers = lab.run(lab.driver.list_host_servers(host))
    record = lab.client.inject("host-crash", host)
    assert record["time"] > 0
    # The heartbeat is still fresh: Nova refuses to evacuate, as in production.
    with pytest.raises(ComputeServiceInUse):
        lab.run(lab.driver.evacuate(servers[0].id))
    wait_for("Nova to report host1 down", lambda: service(lab, host).state == "down", SERVICE_DOWN)
    assert {s.host_status for s in lab.run(lab.driver.list_host_servers(host))} == {"UNKNOWN"}
    assert lab.client.running()[servers[0].id] == []  # the OS died with its guests
    lab.run(lab.driver.set_forced_down(host, True))
    assert {s.host_status for s in lab.run(lab.driver.list_host_servers(host))} == {"DOWN"}
    moved = evacuate_all_and_wait(lab, host)
    lab.no_server_runs_twice()
    lab.client.heal("host-crash", host)
    # Real Nova's init_host on the rebooted host cleans up the evacuated instances.
    wait_for("host1 compute back", lambda: lab.client.status() and host_running(lab, host), 30)
    lab.run(lab.driver.set_forced_down(host, False))
    wait_for("host1 up in Nova", lambda: service(lab, host).state == "up", SERVICE_DOWN)
    running = lab.client.running()
    assert all(host not in running[sid] and len(running[sid]) == 1 for sid in moved)


def host_running(lab: RunningLab, host: str) -> bool:
    return "host-crash" not in lab.host(host)["faults"]


def test_power_loss_then_power_on_through_ipmi(lab: RunningLab) -> None:
    host = "host2"
    client = bmc(lab, host)
    assert lab.run(client.power_state()) is PowerState.ON
    lab.client.inject("power-loss", host)
    assert lab.run(client.power_state()) is PowerState.OFF
    wait_for("Nova to report host2 down", lambda: service(lab, host).state == "down", SERVICE_DOWN)
    lab.run(lab.driver.set_forced_down(host, True))
    moved = evacuate_all_and_wait(lab, host)
    lab.run(client.power_on())
    wait_for("BMC power on", lambda: lab.run(client.power_state()) is PowerState.ON, 10)
    assert "power-loss" not in lab.host(host)["faults"]
    # The host boots; its nova-compute cleans up what was evacuated away, and only then
    # does Nova let the forced-down flag go.
    wait_for("host2 nova-compute", lambda: lab.host(host)["compute_process"] == "running", 30)
    lab.run(lab.driver.set_forced_down(host, False))
    wait_for("host2 up in Nova", lambda: service(lab, host).state == "up", SERVICE_DOWN)
    running = lab.client.running()
    assert all(host not in running[sid] for sid in moved)
    lab.no_server_runs_twice()
    lab.run(client.close())


def test_power_off_through_ipmi_takes_the_host_down(lab: RunningLab) -> None:
    host = "host5"
    client = bmc(lab, host)
    on_host = [s["id"] for s in lab.servers_on(host)]
    assert on_host and all(lab.client.running()[sid] == [host] for sid in on_host)
    lab.run(client.power_off())
    # Once the BMC has answered, the guests are dead: fencing relies on it (Nova
    # learns of it later, in the background).
    running = lab.client.running()
    assert all(running[sid] == [] for sid in on_host), running
    assert lab.host(host)["bmc"]["power"] == "off"
    assert "power-loss" in lab.host(host)["faults"]
    lab.run(client.power_on())
    wait_for("host5 power on", lambda: lab.host(host)["bmc"]["power"] == "on", 10)
    wait_for("host5 up in Nova", lambda: service(lab, host).state == "up", SERVICE_DOWN)
    lab.run(client.close())


def test_power_reset_through_ipmi_reboots_the_host(lab: RunningLab) -> None:
    host = "host5"
    on_host = [s["id"] for s in lab.servers_on(host)]
    # The previous power cycle rebooted host5: its guests settle SHUTOFF; start one.
    wait_for(
        "host5's guest to settle after the reboot",
        lambda: (
            (s := lab.run(lab.driver.get_server(on_host[0]))).status == "SHUTOFF"
            and s.task_state is None
        ),
        30,
    )
    lab.run(lab.driver.start_server(on_host[0]))
    wait_for(
        "a guest running on host5",
        lambda: lab.client.running()[on_host[0]] == [host],
        30,
    )
    reset = lab.ipmitool(host, "power", "reset")
    assert reset.returncode == 0, reset.stderr
    # A reset is a reboot: the guests stop, nova-compute comes back, power stays on.
    wait_for(
        "the guest stopped by the reboot",
        lambda: lab.run(lab.driver.get_server(on_host[0])).status == "SHUTOFF",
        30,
    )
    assert lab.client.running()[on_host[0]] == []
    assert lab.host(host)["bmc"]["power"] == "on"
    wait_for("host5 up in Nova", lambda: service(lab, host).state == "up", SERVICE_DOWN)


def test_mgmt_partition_keeps_guests_running_and_bmc_says_on(lab: RunningLab) -> None:
    host = "host3"
    lab.client.inject("mgmt-partition", host)
    wait_for("Nova to report host3 down", lambda: service(lab, host).state == "down", SERVICE_DOWN)
    assert lab.run(bmc(lab, host).power_state()) is PowerState.ON
    running = lab.client.running()
    assert all(running[s["id"]] == [host] for s in lab.servers_on(host))  # the danger
    lab.client.heal("mgmt-partition", host)
    wait_for("host3 up again", lambda: service(lab, host).state == "up", SERVICE_DOWN)


def test_compute_process_down_leaves_guests_running(lab: RunningLab) -> None:
    host = "host3"
    lab.client.inject("compute-process-down", host)
    wait_for("Nova to report host3 down", lambda: service(lab, host).state == "down", SERVICE_DOWN)
    running = lab.client.running()
    assert all(running[s["id"]] == [host] for s in lab.servers_on(host))
    lab.client.heal("compute-process-down", host)
    wait_for("host3 up again", lambda: service(lab, host).state == "up", SERVICE_DOWN)


def test_server_crash_is_seen_by_novas_power_sync_and_heals(lab: RunningLab) -> None:
    victim = lab.servers_on("host4")[0]["id"]
    lab.cli("lab", "inject", "server-crash", victim)
    s = wait_for(
        "Nova to see the crash",
        lambda: (x := lab.run(lab.driver.get_server(victim))).status == "SHUTOFF" and x,
        30,
    )
    assert s.power_state_name == "shutdown"
    assert lab.client.running()[victim] == []
    lab.cli("lab", "heal", "server-crash", victim)
    wait_for(
        "server ACTIVE again", lambda: lab.run(lab.driver.get_server(victim)).status == "ACTIVE", 30
    )
    assert lab.client.running()[victim] == ["host4"]


def test_link_down_is_a_data_plane_fault_only(lab: RunningLab) -> None:
    lab.cli("lab", "inject", "link-down", "host4", "physnet1")
    h = lab.host("host4")
    assert h["links"] == {"physnet1": False, "physnet2": True}
    assert "link-down:physnet1" in h["faults"]
    assert service(lab, "host4").state == "up"
    lab.cli("lab", "heal", "link-down", "host4", "physnet1")
    assert lab.host("host4")["links"]["physnet1"] is True


def test_bmc_unreachable_and_heal(lab: RunningLab) -> None:
    lab.client.inject("bmc-unreachable", "host4")
    client = bmc(lab, "host4")
    with pytest.raises(BmcUnreachable):
        lab.run(client.power_state())
    lab.client.heal("bmc-unreachable", "host4")

    def answers_on() -> bool:
        # pyghmi may still be retrying the session the outage broke (about 5 s): the
        # BMC answers again once it gives up, as a real one would after a network blip.
        try:
            return lab.run(client.power_state()) is PowerState.ON
        except BmcUnreachable:
            return False

    wait_for("the BMC to answer again", answers_on, 20, 0.5)
    lab.run(client.close())


def test_bad_input_is_refused_and_changes_nothing(lab: RunningLab) -> None:
    before = lab.client.faults()
    r = lab.cli("lab", "inject", "host-crash", "no-such-host", check=False)
    assert r.returncode == 1 and "unknown host 'no-such-host'" in r.stderr
    r = lab.cli("lab", "inject", "server-crash", "no-such-server", check=False)
    assert r.returncode == 1 and "unknown server" in r.stderr
    r = lab.cli("lab", "inject", "link-down", "host4", "physnet9", check=False)
    assert r.returncode == 1 and "no physnet 'physnet9'" in r.stderr
    r = lab.cli("lab", "inject", "meteor-strike", "host4", check=False)
    assert r.returncode != 0
    r = lab.cli("lab", "heal", "host-crash", "host4", check=False)
    assert r.returncode == 1 and "not active" in r.stderr
    assert lab.client.faults() == before
    assert service(lab, "host4").state == "up"


def test_second_up_is_refused_while_one_runs(lab: RunningLab) -> None:
    r = lab.cli("lab", "up", check=False)
    assert r.returncode == 1
    assert "already running" in r.stderr


def test_lab_env_points_clients_at_the_lab(lab: RunningLab) -> None:
    exports = dict(
        line.removeprefix("export ").split("=", 1)
        for line in lab.cli("lab", "env").stdout.splitlines()
    )
    assert set(exports) == {
        "OS_CLIENT_CONFIG_FILE",
        "OS_CLOUD",
        "MEDEVAC_CONFIG",
        "MEDEVAC_URL",
        "MEDEVAC_TOKEN",
    }
    from medevac.config import load_settings

    settings = load_settings(exports["MEDEVAC_CONFIG"].strip("'"))
    assert settings.cloud.name == exports["OS_CLOUD"]
    assert set(settings.hosts) == {f"host{i}" for i in range(1, 6)}
    assert set(settings.bmc_credentials()) == set(settings.hosts)

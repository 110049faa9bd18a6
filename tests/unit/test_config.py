"""Configuration: TOML plus environment overrides, with errors that say where."""

from pathlib import Path

import pytest

from medevac.config import ConfigError, Role, load_settings
from medevac.storage.models import NAME_LENGTH

GOOD = """
[api]
port = 9000

[[api.tokens]]
name = "ops"
token = "0123456789abcdef0123"
role = "admin"

[[api.tokens]]
name = "tenant"
token = "fedcba98765432100123"
role = "member"
project_id = "p1"

[hosts.compute1]
bmc_address = "127.0.0.1"
bmc_port = 6230
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "medevac.toml"
    path.write_text(text)
    return path


def test_reads_toml_file(tmp_path: Path) -> None:
    s = load_settings(write(tmp_path, GOOD))
    assert s.api.port == 9000
    assert [t.role for t in s.api.tokens] == [Role.ADMIN, Role.MEMBER]
    assert s.hosts["compute1"].bmc_port == 6230
    assert s.storage.url.startswith("sqlite:///")


def test_environment_overrides_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEDEVAC_API__PORT", "9100")
    monkeypatch.setenv("MEDEVAC_CLOUD__NAME", "prod")
    s = load_settings(write(tmp_path, GOOD))
    assert s.api.port == 9100
    assert s.cloud.name == "prod"


def test_config_path_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEDEVAC_CONFIG", str(write(tmp_path, GOOD)))
    assert load_settings().api.port == 9000


def test_invalid_value_names_the_field(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"api\.port: .*integer.*'abc'"):
        load_settings(write(tmp_path, '[api]\nport = "abc"\n'))


def test_unknown_key_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"api\.prot"):
        load_settings(write(tmp_path, "[api]\nprot = 1\n"))


def test_missing_file_and_bad_toml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such file"):
        load_settings(tmp_path / "absent.toml")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(write(tmp_path, "[api\n"))


def test_member_token_needs_project(tmp_path: Path) -> None:
    text = '[[api.tokens]]\nname = "t"\ntoken = "0123456789abcdef0123"\nrole = "member"\n'
    with pytest.raises(ConfigError, match="needs a project_id"):
        load_settings(write(tmp_path, text))


@pytest.mark.parametrize(
    ("text", "field"),
    [
        (
            '[[api.tokens]]\nname = "{long}"\ntoken = "0123456789abcdef0123"\nrole = "admin"\n',
            "name",
        ),
        (
            '[[api.tokens]]\nname = "t"\ntoken = "0123456789abcdef0123"\nrole = "member"\n'
            'project_id = "{long}"\n',
            "project_id",
        ),
        ('[hosts.{long}]\nbmc_address = "127.0.0.1"\n', "hosts"),
        ('[hosts.c1]\nbmc_address = "127.0.0.1"\nzone = "{long}"\n', "zone"),
    ],
)
def test_names_the_store_keeps_are_refused_past_its_columns(
    tmp_path: Path, text: str, field: str
) -> None:
    """Token names (audit actors), members' projects (alarms' projects), host names and
    zones: PostgreSQL would refuse a longer one at the first write."""
    with pytest.raises(ConfigError, match=f"{field}.*at most {NAME_LENGTH}"):
        load_settings(write(tmp_path, text.format(long="x" * (NAME_LENGTH + 1))))
    assert load_settings(write(tmp_path, text.format(long="x" * NAME_LENGTH)))


def test_secret_values_never_appear_in_errors_or_repr(tmp_path: Path) -> None:
    text = '[[api.tokens]]\nname = "t"\ntoken = "short-secret"\nrole = "admin"\n'
    with pytest.raises(ConfigError) as info:
        load_settings(write(tmp_path, text))
    assert "short-secret" not in str(info.value)
    s = load_settings(write(tmp_path, GOOD))
    assert "0123456789abcdef0123" not in repr(s)


def test_bmc_secrets_file(tmp_path: Path) -> None:
    secrets = tmp_path / "bmc.toml"
    secrets.write_text('[compute1]\nusername = "admin"\npassword = "hunter2hunter2"\n')
    s = load_settings(write(tmp_path, f'bmc_secrets_file = "{secrets}"\n' + GOOD))
    creds = s.bmc_credentials()
    assert creds["compute1"].password.get_secret_value() == "hunter2hunter2"
    assert "hunter2" not in repr(creds)
    secrets.write_text('[compute1]\nusername = "admin"\n')
    with pytest.raises(ConfigError, match=r"(?s)compute1.*password"):
        s.bmc_credentials()


def test_monitor_tunables_reach_the_detector(tmp_path: Path) -> None:
    from medevac.service import monitor_settings

    text = (
        "[monitor]\nphi_threshold = 11.0\nprobes = 5\nbmc_verdict_wait = 0.3\nlisten_port = 9999\n"
    )
    m = monitor_settings(load_settings(write(tmp_path, text)).monitor)
    assert (m.phi_threshold, m.probes, m.bmc_verdict_wait) == (11.0, 5, 0.3)
    assert m.isolation_min_hosts == 3 and m.interval == 0.1  # defaults pass through too


def test_external_inputs_networks_and_doctor_zone(tmp_path: Path) -> None:
    s = load_settings(write(tmp_path, "[monitor]\n"))
    assert s.monitor.tokenless_fault_networks == [] and s.monitor.doctor_time_zone == "UTC"
    s = load_settings(
        write(
            tmp_path,
            '[monitor]\ntokenless_fault_networks = ["10.0.0.0/24", "fd00::/64"]\n'
            'doctor_time_zone = "Europe/Paris"\n',
        )
    )
    assert [str(n) for n in s.monitor.tokenless_fault_networks] == ["10.0.0.0/24", "fd00::/64"]
    assert str(s.monitor.doctor_zone) == "Europe/Paris"
    with pytest.raises(ConfigError, match=r"monitor\.doctor_time_zone: .*unknown time zone"):
        load_settings(write(tmp_path, '[monitor]\ndoctor_time_zone = "Mars/Olympus"\n'))
    with pytest.raises(ConfigError, match=r"monitor\.tokenless_fault_networks"):
        load_settings(write(tmp_path, '[monitor]\ntokenless_fault_networks = ["10.0.0.1/8"]\n'))


def test_the_configuration_takes_its_defaults_from_the_blocks_and_maps_every_tunable() -> None:
    import dataclasses

    from medevac.config import HostGroupConfig, MonitorConfig
    from medevac.monitor.hosts import MonitorSettings
    from medevac.recovery.policy import HostGroup
    from medevac.service import host_group, monitor_settings

    assert monitor_settings(MonitorConfig()) == MonitorSettings()
    assert host_group(HostGroupConfig(name="default")) == HostGroup()
    shared = set(MonitorConfig.model_fields) & {f.name for f in dataclasses.fields(MonitorSettings)}
    assert len(shared) >= 11
    for name in shared:  # each configured value reaches the monitor, none is dropped
        value = getattr(MonitorSettings(), name) * 2
        changed = monitor_settings(MonitorConfig(**{name: value}))
        assert getattr(changed, name) == value, name


def test_retention_takes_its_defaults_from_the_purge_and_maps_every_bound() -> None:
    import dataclasses

    from medevac.config import RetentionConfig
    from medevac.service import retention_policy
    from medevac.storage.retention import RetentionPolicy

    assert retention_policy(RetentionConfig()) == RetentionPolicy()
    for f in dataclasses.fields(RetentionPolicy):  # each configured value reaches the purge
        value = getattr(RetentionPolicy(), f.name) * 2
        assert getattr(retention_policy(RetentionConfig(**{f.name: value})), f.name) == value

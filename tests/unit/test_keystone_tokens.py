"""Keystone tokens in the API: how a token's roles map to the API's, and how long a
validated token is trusted (pure: the lab test runs a real Keystone)."""

from __future__ import annotations

import asyncio
import datetime as dt
import threading

import pytest
from pydantic import ValidationError

from medevac.api.auth import (
    KeystoneValidator,
    Principal,
    TokenCache,
    keystone_principal,
    trust_for,
)
from medevac.api.errors import ApiError
from medevac.config import KeystoneConfig, Role


def test_a_reader_reads_every_project_only_from_the_system_or_a_readers_project() -> None:
    every = Principal("keystone:u", Role.READER, None)
    assert keystone_principal("u", "p0", ["reader"], project_name="admin") == every
    assert keystone_principal("u", None, ["reader"], system=True) == every
    assert keystone_principal("u", "p9", ["reader"], project_name="ops", reader_projects=["ops"])
    assert keystone_principal("u", "p1", ["reader"], project_name="tenant-a") is None


@pytest.mark.parametrize(
    ("roles", "project", "expected"),
    [
        (["admin", "member", "reader"], "p1", Principal("keystone:u", Role.ADMIN, None)),
        (["member", "reader"], "p1", Principal("keystone:u", Role.MEMBER, "p1")),
        (["Member"], "p1", Principal("keystone:u", Role.MEMBER, "p1")),
        (["reader"], "p1", None),  # a tenant's reader must not read the others
        (["reader"], None, None),
        (["member", "reader"], None, None),  # a member of no project: no access
        (["service"], "svc", None),
        ([], "p1", None),
    ],
)
def test_roles_map_to_the_api_roles(
    roles: list[str], project: str | None, expected: Principal | None
) -> None:
    assert keystone_principal("u", project, roles) == expected


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_cached_token_expires_at_its_deadline() -> None:
    clock = Clock()
    cache = TokenCache(10, clock)
    p = Principal("keystone:u", Role.READER, None)
    cache.put(b"t", p, 5.0)
    clock.now += 4.9
    assert cache.get(b"t") == p
    clock.now += 0.1
    assert cache.get(b"t") is None
    assert len(cache) == 0  # an expired entry is dropped, not kept


def test_the_cache_is_bounded_least_recently_used_first() -> None:
    cache = TokenCache(2, Clock())
    p = Principal("keystone:u", Role.READER, None)
    cache.put(b"a", p, 60)
    cache.put(b"b", p, 60)
    assert cache.get(b"a") == p  # a is now the most recently used
    cache.put(b"c", p, 60)
    assert cache.get(b"b") is None
    assert cache.get(b"a") == p and cache.get(b"c") == p
    assert len(cache) == 2


def test_no_trust_means_no_entry() -> None:
    cache = TokenCache(2, Clock())
    cache.put(b"a", Principal("keystone:u", Role.READER, None), 0.0)
    assert cache.get(b"a") is None


def test_trust_is_cache_seconds_but_never_past_the_expiry() -> None:
    now = dt.datetime(2026, 1, 1, 12, 0, tzinfo=dt.UTC)
    assert trust_for(60, now + dt.timedelta(hours=1), now) == 60
    assert trust_for(60, now + dt.timedelta(seconds=20), now) == 20
    assert trust_for(60, now - dt.timedelta(seconds=1), now) == 0
    # keystoneauth may hand a naive datetime: it is UTC.
    assert trust_for(60, dt.datetime(2026, 1, 1, 12, 0, 30), now) == 30
    assert trust_for(0, now + dt.timedelta(hours=1), now) == 0
    assert trust_for(60, None, now) == 60


def test_keystone_needs_the_service_users_password() -> None:
    assert not KeystoneConfig().enabled
    with pytest.raises(ValidationError, match=r"keystone\.password must be set"):
        KeystoneConfig(auth_url="http://keystone:5000/v3")
    config = KeystoneConfig(auth_url="http://keystone:5000/v3", password="s3cret-pass")
    assert config.enabled
    assert "s3cret-pass" not in repr(config)


class CountingValidator(KeystoneValidator):
    """Keystone's answer given here (the lab test asks a real Keystone): how many
    times it was asked, and when it may answer."""

    def __init__(self) -> None:
        super().__init__(KeystoneConfig(auth_url="http://keystone.invalid/v3", password="pw"))
        self.calls = 0
        self.release = threading.Event()
        self.asked = threading.Event()

    def validate_blocking(self, token: str) -> tuple[Principal | None, float] | None:
        self.calls += 1
        self.asked.set()
        self.release.wait(5)
        if token == "bad":
            return None
        return Principal("keystone:u", Role.READER, None), 60.0


def test_one_new_token_asked_at_once_is_validated_once() -> None:
    async def scenario() -> None:
        v = CountingValidator()
        first = asyncio.create_task(v.principal("tok"))
        others = [asyncio.create_task(v.principal("tok")) for _ in range(4)]
        assert await asyncio.to_thread(v.asked.wait, 5)  # Keystone is being asked
        first.cancel()  # the request that asked first goes away: the others still get it
        v.release.set()
        answers = await asyncio.gather(*others)
        assert answers == [Principal("keystone:u", Role.READER, None)] * 4
        assert v.calls == 1
        assert await v.principal("tok") == answers[0] and v.calls == 1  # cached
        with pytest.raises(ApiError) as caught:
            await v.principal("bad")
        assert caught.value.status == 401
        with pytest.raises(ApiError):
            await v.principal("bad")
        assert v.calls == 3  # an invalid token is not cached

    asyncio.run(scenario())

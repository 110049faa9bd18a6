"""The heartbeat datagram: round trip, authentication with per-host keys, replay
protection, fuzzing."""

from __future__ import annotations

import hmac
import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from medevac.monitor.protocol import (
    Admission,
    Checks,
    Datagram,
    DatagramError,
    DatagramKind,
    DropReason,
    HostKeys,
    SequenceGuard,
    decode,
    decode_signed,
    encode,
    host_key,
)

KEY = b"k" * 32
BOOT = bytes(range(16))


def hb(seq: int = 1, boot: bytes = BOOT, sent_at: float = 1000.0, **checks: object) -> Datagram:
    return Datagram(DatagramKind.HEARTBEAT, "compute-1", seq, boot, sent_at, Checks(**checks))  # type: ignore[arg-type]


def test_round_trip_with_checks() -> None:
    d = hb(seq=7, compute_alive=False, links_down=("physnet1",), domains_down=("s-1", "s-2"))
    assert decode(encode(d, KEY), KEY) == d


def test_plain_heartbeat_is_small() -> None:
    assert len(encode(hb(), KEY)) < 100


@pytest.mark.parametrize("index", [5, 10, 30, 50, -1])
def test_any_flipped_byte_is_refused(index: int) -> None:
    data = bytearray(encode(hb(), KEY))
    data[index] ^= 0x01
    with pytest.raises(DatagramError) as info:
        decode(bytes(data), KEY)
    assert info.value.reason in (DropReason.BAD_MAC, DropReason.BAD_VERSION, DropReason.MALFORMED)


def test_wrong_key_is_bad_mac() -> None:
    with pytest.raises(DatagramError) as info:
        decode(encode(hb(), KEY), b"x" * 32)
    assert info.value.reason is DropReason.BAD_MAC


def test_each_host_has_its_own_key_derived_from_the_master() -> None:
    expected = hmac.new(KEY, b"medevac-agent:compute-1", "sha256").hexdigest().encode()
    assert host_key(KEY, "compute-1") == expected
    assert host_key(KEY, "compute-2") != expected
    assert host_key(b"m" * 32, "compute-1") != expected


def test_a_host_signing_as_another_host_is_bad_mac() -> None:
    keys = HostKeys(KEY, ["compute-1", "compute-2"])
    forged = encode(hb(), host_key(KEY, "compute-2"))  # hb() names compute-1
    with pytest.raises(DatagramError) as info:
        decode_signed(forged, lambda host: (keys.for_host(host),))
    assert info.value.reason is DropReason.BAD_MAC
    d, key = decode_signed(encode(hb(), host_key(KEY, "compute-1")), keys.candidates)
    assert d == hb() and key == keys.for_host("compute-1") and not keys.is_master(key)


def test_the_master_key_is_offered_last_and_named() -> None:
    keys = HostKeys(KEY, ["compute-1"])
    d, key = decode_signed(encode(hb(), KEY), keys.candidates)
    assert d == hb() and keys.is_master(key)


def test_other_version_is_refused_by_name() -> None:
    data = bytearray(encode(hb(), KEY))
    data[4] = 9
    with pytest.raises(DatagramError) as info:
        decode(bytes(data), KEY)
    assert info.value.reason is DropReason.BAD_VERSION


def test_truncated_is_malformed() -> None:
    with pytest.raises(DatagramError) as info:
        decode(encode(hb(), KEY)[:20], KEY)
    assert info.value.reason is DropReason.MALFORMED


@given(st.binary(max_size=1500))
@settings(max_examples=500)
def test_random_bytes_never_crash(data: bytes) -> None:
    with pytest.raises(DatagramError):
        decode(data, KEY)


@given(
    seq=st.integers(0, 2**64 - 1),
    host=st.text(min_size=1, max_size=60).filter(lambda h: 0 < len(h.encode()) < 256),
    links=st.lists(st.text(max_size=20), max_size=4),
)
def test_round_trip_property(seq: int, host: str, links: list[str]) -> None:
    d = Datagram(
        DatagramKind.PROBE_REPLY, host, seq, os.urandom(16), 1.5, Checks(True, tuple(links))
    )
    assert decode(encode(d, KEY), KEY) == d


def test_sequence_guard_copies_replays_and_reboots() -> None:
    g = SequenceGuard()
    assert g.admit(hb(1)) is Admission.NEW
    assert g.admit(hb(1)) is Admission.COPY  # the second copy of the same heartbeat
    assert g.admit(hb(3)) is Admission.NEW
    assert g.admit(hb(2)) is Admission.REPLAY  # late or replayed
    new_boot = b"\xff" * 16
    assert g.admit(hb(1, boot=new_boot, sent_at=1001.0)) is Admission.NEW  # agent restarted
    assert g.admit(hb(50, boot=BOOT, sent_at=1000.5)) is Admission.REPLAY  # the old boot's

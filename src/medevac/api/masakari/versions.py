"""Masakari's microversions: 1.0 to 1.3, asked for in ``OpenStack-API-Version``.

Pure. No header means 1.0 and ``latest`` the newest; a malformed version is a 400 and
one out of range a 406, as Masakari answers (api/openstack/wsgi.py).
"""

from __future__ import annotations

import re
from collections.abc import Iterable

SERVICE = "instance-ha"
HEADER = "OpenStack-API-Version"
MIN_VERSION = (1, 0)
MAX_VERSION = (1, 3)
# What each version added (masakari/api/api_version_request.py).
PROGRESS_DETAILS = (1, 1)  # a notification's recovery_workflow_details
SEGMENT_ENABLED = (1, 2)  # a segment's enabled, in requests
VMOVES = (1, 3)

_VERSION = re.compile(r"^([1-9]\d*)\.([1-9]\d*|0)$")

Version = tuple[int, int]


class VersionError(Exception):
    """The asked version is malformed (400) or not served (406)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def text(version: Version) -> str:
    return f"{version[0]}.{version[1]}"


def requested(values: Iterable[str]) -> Version:
    """The version the ``OpenStack-API-Version`` header values ask of this service
    (comma-separated ``<service> <version>`` items; other services' are skipped)."""
    asked: str | None = None
    for value in values:
        for item in value.split(","):
            service, _, value_version = item.strip().partition(" ")
            if service.lower() == SERVICE:
                asked = value_version.strip()
    if asked is None:
        return MIN_VERSION
    if asked.lower() == "latest":
        return MAX_VERSION
    match = _VERSION.match(asked)
    if match is None:
        raise VersionError(
            400,
            f"API Version String {asked[:32]} is of invalid format. Must be of format "
            "MajorNum.MinorNum.",
        )
    number = (int(match.group(1)), int(match.group(2)))
    if not MIN_VERSION <= number <= MAX_VERSION:
        raise VersionError(
            406,
            f"Version {text(number)} is not supported by the API. Minimum is "
            f"{text(MIN_VERSION)} and maximum is {text(MAX_VERSION)}.",
        )
    return number


def answer_headers(version: Version) -> dict[str, str]:
    """The headers every answer carries: the version it was served at."""
    return {HEADER: f"{SERVICE} {text(version)}", "Vary": HEADER}

"""The API over HTTPS when api.tls_cert_file and api.tls_key_file are set."""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from pydantic import ValidationError

from medevac.api import create_app
from medevac.config import ApiConfig, Settings
from medevac.serving import base_url
from medevac.storage import Database
from tests.conftest import READER_TOKEN, free_port
from tests.serving import served
from tests.tls import self_signed


@pytest.fixture
def https(settings: Settings, db: Database, tmp_path: Path) -> Iterator[tuple[str, Path]]:
    cert_file, key_file = self_signed(tmp_path)
    api = settings.api.model_copy(
        update={"port": free_port(), "tls_cert_file": cert_file, "tls_key_file": key_file}
    )
    with served(create_app(settings.model_copy(update={"api": api}), db), api) as url:
        yield url, cert_file


def test_api_serves_https_with_the_configured_certificate(https: tuple[str, Path]) -> None:
    url, cert_file = https
    assert url.startswith("https://127.0.0.1:")
    trusted = ssl.create_default_context(cafile=str(cert_file))
    r = httpx.get(f"{url}/v1/whoami", headers={"X-Auth-Token": READER_TOKEN}, verify=trusted)
    assert r.status_code == 200 and r.json()["role"] == "reader"
    with pytest.raises(httpx.ConnectError):  # an unknown certificate is not trusted
        httpx.get(f"{url}/healthz")
    with pytest.raises(httpx.HTTPError):  # and plain HTTP gets no answer
        httpx.get(url.replace("https://", "http://") + "/healthz", timeout=5)


def test_certificate_and_key_go_together(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="tls_cert_file and tls_key_file"):
        ApiConfig(tls_cert_file=tmp_path / "api.crt")
    assert base_url(ApiConfig(host="::1", port=9)) == "http://[::1]:9"

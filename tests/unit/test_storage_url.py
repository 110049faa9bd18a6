"""A mistyped storage.url never shows the database password, wherever it is reported."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from medevac.cli.main import app
from medevac.storage.db import Database, StorageError, redact_url

PASSWORD = "Hunter2-db-pass"
TYPOS = [
    f"postgresql+psycopg//medevac:{PASSWORD}@db/medevac",  # no colon after the scheme
    f"postgresql+psycopg:/medevac:{PASSWORD}@db/medevac",  # one slash
    f"postgresql+psycopg://medevac:{PASSWORD}@db:54x2/medevac",  # port
    f"postgres+psycopg://medevac:{PASSWORD}@db/medevac",  # dialect
    f"postgresql+psycpg://medevac:{PASSWORD}@db/medevac",  # driver
    f"sqlite:/medevac:{PASSWORD}@x",
]


@pytest.mark.parametrize("url", TYPOS)
def test_storage_errors_hide_the_password(url: str) -> None:
    with pytest.raises(StorageError) as refused:
        Database(url)
    assert PASSWORD not in str(refused.value) and "medevac:***@" in str(refused.value)


@pytest.mark.parametrize("url", TYPOS[:3])
def test_db_upgrade_prints_no_password(url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEDEVAC_STORAGE__URL", url)
    monkeypatch.delenv("MEDEVAC_CONFIG", raising=False)
    result = CliRunner().invoke(app, ["db", "upgrade"])
    assert result.exit_code != 0
    assert PASSWORD not in result.output and "***" in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://u:p@w:d@h/db", "postgresql://u:***@h/db"),
        ("postgresql://u@h/db", "postgresql://u@h/db"),
        ("sqlite:///medevac.db", "sqlite:///medevac.db"),
    ],
)
def test_redact_url(url: str, shown: str) -> None:
    assert redact_url(url) == shown

"""The configuration reference in docs/ is what the models render, so it cannot drift."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from pydantic import BaseModel

from medevac import config_reference as reference
from medevac.config import Settings, load_settings

DOC = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"


def test_docs_configuration_is_what_the_models_render() -> None:
    text = DOC.read_text()
    assert reference.splice(text, reference.render()) == text, (
        "docs/configuration.md differs from the configuration models: run "
        "`medevac config reference --write docs/configuration.md`"
    )


def test_every_key_has_a_description_and_every_section_a_docstring() -> None:
    for section in reference.sections():
        assert section.model.__doc__, f"{section.header or 'top level'}: no docstring"
        for name, field in section.keys:
            assert field.description, f"{section.header or 'top level'} {name}: no description"


def test_every_key_of_every_model_is_in_the_reference() -> None:
    listed: dict[type[BaseModel], set[str]] = {}
    for section in reference.sections():
        listed.setdefault(section.model, set()).update(name for name, _ in section.keys)
    for model, names in listed.items():
        tables = {n for n, f in model.model_fields.items() if not reference.is_key(f)}
        assert names | tables == set(model.model_fields)


@pytest.mark.parametrize(
    ("path", "value", "read", "expected"),
    [
        (("agent_key_file",), "/etc/medevac/agent.key", lambda s: str(s.agent_key_file), None),
        (("api", "port"), "9000", lambda s: s.api.port, 9000),
        (("monitor", "phi_threshold"), "9.5", lambda s: s.monitor.phi_threshold, 9.5),
        (("hosts", "compute1", "zone"), "edge", lambda s: s.hosts["compute1"].zone, None),
        (
            ("recovery", "groups"),
            '[{"name": "edge", "level": 3}]',
            lambda s: (s.recovery.groups[0].name, s.recovery.groups[0].level),
            ("edge", 3),
        ),
    ],
)
def test_the_environment_variables_named_override_the_file(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    path: tuple[str, ...],
    value: str,
    read: Callable[[Settings], object],
    expected: object,
) -> None:
    config = tmp_path / "medevac.toml"
    config.write_text('[hosts.compute1]\nbmc_address = "10.0.0.11"\nzone = "nova"\n')
    monkeypatch.setenv(reference.env_name(*path), value)
    assert read(load_settings(config)) == (value if expected is None else expected)


def test_write_replaces_only_the_part_between_the_markers(tmp_path: Path) -> None:
    doc = tmp_path / "configuration.md"
    doc.write_text(f"# Intro\n\n{reference.START}\nOLD-REFERENCE\n{reference.END}\n\nAfter.\n")
    assert reference.write(doc) is True
    text = doc.read_text()
    assert text.startswith("# Intro\n\n") and text.endswith("\n\nAfter.\n")
    assert "OLD-REFERENCE" not in text and "`[monitor]`" in text
    assert reference.write(doc) is False


def test_a_document_without_markers_is_refused() -> None:
    with pytest.raises(ValueError, match="markers"):
        reference.splice("# no markers\n", reference.render())


def test_the_cli_prints_the_reference_and_writes_it(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from medevac.cli.main import app

    printed = CliRunner().invoke(app, ["config", "reference"])
    assert printed.exit_code == 0 and printed.output == reference.render()
    doc = tmp_path / "configuration.md"
    doc.write_text(f"{reference.START}\n{reference.END}\n")
    written = CliRunner().invoke(app, ["config", "reference", "--write", str(doc)])
    assert written.exit_code == 0 and "reference updated" in written.output
    assert reference.render() in doc.read_text()

"""The configuration reference, rendered from the models in ``medevac.config``.

Every key of the TOML file with its type, constraints, default, environment variable
and description (each field's ``description``; a section's is its model's docstring).
docs/configuration.md holds the rendering between two markers: ``medevac config
reference --write docs/configuration.md`` refreshes it, and a unit test fails when
the file and the models disagree.
"""

from __future__ import annotations

import enum
import types
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

import annotated_types
from pydantic import BaseModel, SecretStr
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from medevac.config import BmcCredentials, Settings

START = "<!-- config-reference:start -->"
END = "<!-- config-reference:end -->"
ENV_PREFIX = "MEDEVAC_"
ENV_NESTING = "__"


@dataclass(frozen=True)
class Section:
    """One TOML table (or the file's top level) and how the environment reaches it."""

    header: str  # "" for the top level, else "[api]", "[[api.tokens]]", "[hosts.NAME]"
    model: type[BaseModel]
    env: str  # how its keys are overridden from the environment
    keys: tuple[tuple[str, FieldInfo], ...]


def _model_of(annotation: Any) -> type[BaseModel] | None:
    return (
        annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None
    )


def _list_item_model(annotation: Any) -> type[BaseModel] | None:
    return _model_of(get_args(annotation)[0]) if get_origin(annotation) is list else None


def _dict_value_model(annotation: Any) -> type[BaseModel] | None:
    return _model_of(get_args(annotation)[1]) if get_origin(annotation) is dict else None


def env_name(*path: str) -> str:
    """The environment variable that overrides a key: ``MEDEVAC_API__PORT``."""
    return ENV_PREFIX + ENV_NESTING.join(p.upper() for p in path)


def sections() -> Iterator[Section]:
    """The file's tables in the order they may be written: top-level keys first."""
    top = Settings.model_fields
    plain = tuple((k, f) for k, f in top.items() if is_key(f))
    yield Section("", Settings, f"`{env_name('<KEY>')}`", plain)
    for name, field in top.items():
        model = _model_of(field.annotation)
        hosts = _dict_value_model(field.annotation)
        if model is not None:
            yield _table(f"[{name}]", model, f"`{env_name(name, '<KEY>')}`")
            for sub, subfield in model.model_fields.items():
                item = _list_item_model(subfield.annotation)
                if item is not None:
                    env = f"the whole list as JSON in `{env_name(name, sub)}`"
                    yield _table(f"[[{name}.{sub}]]", item, env)
        elif hosts is not None:
            env = (
                f"`{env_name(name, '<NAME>', '<KEY>')}` (names from the environment are "
                "read in lower case)"
            )
            yield _table(f"[{name}.NAME]", hosts, env)
    yield _table("[NAME] in the file bmc_secrets_file names", BmcCredentials, "none")


def _table(header: str, model: type[BaseModel], env: str) -> Section:
    keys = tuple((k, f) for k, f in model.model_fields.items() if is_key(f))
    return Section(header, model, env, keys)


def is_key(field: FieldInfo) -> bool:
    """A value of its own, not a table (tables get sections of their own)."""
    a = field.annotation
    return not (_model_of(a) or _list_item_model(a) or _dict_value_model(a))


def type_name(annotation: Any) -> str:
    """How a key's type reads in the reference."""
    origin = get_origin(annotation)
    if origin is Literal:
        return " or ".join(_toml(v) for v in get_args(annotation))
    if origin in (Union, types.UnionType):
        kinds = [type_name(a) for a in get_args(annotation) if a is not type(None)]
        return " or ".join(kinds)
    if origin is list:
        return f"list of {type_name(get_args(annotation)[0])}s"
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return " or ".join(_toml(m.value) for m in annotation)
    names = {str: "string", int: "integer", float: "float", bool: "boolean", Path: "path"}
    if annotation is SecretStr:
        return "string (secret)"
    return names.get(annotation, getattr(annotation, "__name__", str(annotation)))


def constraints(field: FieldInfo) -> list[str]:
    """The field's bounds as ``0 to 65535``, ``> 0``, ``not empty``, ``matching `...```."""
    ge = next((m.ge for m in field.metadata if isinstance(m, annotated_types.Ge)), None)
    le = next((m.le for m in field.metadata if isinstance(m, annotated_types.Le)), None)
    ranged = ge is not None and le is not None
    out: list[str] = [f"{ge} to {le}"] if ranged else []
    for m in field.metadata:
        if ranged and isinstance(m, annotated_types.Ge | annotated_types.Le):
            continue
        if isinstance(m, annotated_types.Gt):
            out.append(f"> {m.gt}")
        elif isinstance(m, annotated_types.Ge):
            out.append(f">= {m.ge}")
        elif isinstance(m, annotated_types.Lt):
            out.append(f"< {m.lt}")
        elif isinstance(m, annotated_types.Le):
            out.append(f"<= {m.le}")
        elif isinstance(m, annotated_types.MinLen):
            out.append("not empty" if m.min_length == 1 else f"at least {m.min_length} long")
        elif isinstance(m, annotated_types.MaxLen):
            out.append(f"at most {m.max_length} long")
        elif getattr(m, "pattern", None):
            out.append(f"matching `{m.pattern}`")
    return out


def default(field: FieldInfo) -> str:
    if field.default is PydanticUndefined and field.default_factory is None:
        return "required"
    shown = (field.json_schema_extra or {}) if isinstance(field.json_schema_extra, dict) else {}
    if "default_shown" in shown:  # a default of the machine it runs on, said in words
        return str(shown["default_shown"])
    value = field.get_default(call_default_factory=True)
    return "unset" if value is None else f"`{_toml(value)}`"


def _toml(value: Any) -> str:
    if isinstance(value, enum.Enum):
        value = value.value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return str(value)


def _doc(model: type[BaseModel]) -> str:
    return " ".join((model.__doc__ or "").strip().split("\n\n")[0].split())


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def render() -> str:
    """The reference, as Markdown: one table of keys per TOML section."""
    out: list[str] = []
    for s in sections():
        title = f"`{s.header}`" if s.header.startswith("[") else "Top level"
        if " in the file " in s.header:
            header, _, where = s.header.partition(" in the file ")
            title = f"`{header}` in the file {where}"
        out += [f"### {title}", ""]
        doc = _doc(s.model)
        if doc:
            out += [doc, ""]
        out += [f"Environment: {s.env}.", ""]
        if not s.keys:
            continue
        out += ["| key | type | default | description |", "|---|---|---|---|"]
        for name, field in s.keys:
            kind = type_name(field.annotation)
            bounds = constraints(field)
            if bounds:
                kind += f", {', '.join(bounds)}"
            described = (field.description or "").replace("<", "&lt;").replace(">", "&gt;")
            row = (f"`{name}`", kind, default(field), described)
            out.append("| " + " | ".join(_cell(c) for c in row) + " |")
        out.append("")
    return "\n".join(out).rstrip("\n") + "\n"


def splice(document: str, reference: str) -> str:
    """``document`` with the text between the markers replaced by ``reference``."""
    head, start, rest = document.partition(START)
    _, end, tail = rest.partition(END)
    if not start or not end:
        raise ValueError(f"the document has no {START} ... {END} markers")
    return f"{head}{START}\n\n{reference}\n{END}{tail}"


def write(path: Path) -> bool:
    """Refresh the reference in ``path``; True when the file changed."""
    before = path.read_text()
    after = splice(before, render())
    if after != before:
        path.write_text(after)
    return after != before

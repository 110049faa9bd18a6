"""Where a lab keeps its files, and where the lab's OpenStack interpreter lives."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import medevac

LAB_DIR_ENV = "MEDEVAC_LAB_DIR"
LAB_PYTHON_ENV = "MEDEVAC_LAB_PYTHON"
SERVICES_DIR = Path(__file__).parent / "services"
# Every lab has the same two data-plane networks and two tenant projects.
PHYSNETS = ("physnet1", "physnet2")
PROJECTS = ("tenant-a", "tenant-b")


class LabError(Exception):
    """The lab cannot do what was asked; the message says why and what to do."""


def default_lab_dir() -> Path:
    if os.environ.get(LAB_DIR_ENV):
        return Path(os.environ[LAB_DIR_ENV])
    state = Path(os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state")
    return state / "medevac" / "lab"


def find_lab_python() -> Path:
    """The interpreter of the lab venv (Nova, Placement, Neutron), which clashes with ours."""
    if os.environ.get(LAB_PYTHON_ENV):
        candidate = Path(os.environ[LAB_PYTHON_ENV])
        if candidate.exists():
            return candidate
        raise LabError(f"{LAB_PYTHON_ENV}={candidate} does not exist")
    roots = [Path.cwd(), *Path.cwd().parents]
    # An editable install: src/medevac/__init__.py -> the checkout.
    roots.append(Path(medevac.__file__).resolve().parents[2])
    for root in roots:
        candidate = root / ".venv-lab" / "bin" / "python"
        if candidate.exists():
            return candidate
    raise LabError(
        "the lab venv (.venv-lab) was not found; run `make lab-venv` in the checkout "
        f"or set {LAB_PYTHON_ENV}"
    )


@dataclass(frozen=True)
class LabPaths:
    """The files of one lab under its state directory."""

    root: Path

    @property
    def info(self) -> Path:
        """Written last by a ready lab: control URL, pid, endpoints."""
        return self.root / "lab.json"

    @property
    def lock(self) -> Path:
        return self.root / "lab.lock"

    @property
    def log(self) -> Path:
        return self.root / "supervisor.log"

    @property
    def clouds_yaml(self) -> Path:
        return self.root / "clouds.yaml"

    @property
    def controller_config(self) -> Path:
        return self.root / "medevac.toml"

    def controller_config_of(self, index: int) -> Path:
        """The configuration of the ``index``-th controller (from 1) of a lab of several."""
        return self.root / f"medevac-{index}.toml"

    def controller_log_of(self, index: int) -> Path:
        return self.root / f"controller-{index}.log"

    @property
    def cluster(self) -> Path:
        """A lab of several controllers: its PostgreSQL database, to drop at `lab down`."""
        return self.root / "cluster.json"

    @property
    def database_name(self) -> str:
        """The PostgreSQL database of a lab of several controllers, named after its
        state directory (so two labs never share one)."""
        digest = hashlib.blake2b(str(self.root.resolve()).encode(), digest_size=5).hexdigest()
        return f"medevac_lab_{digest}"

    @property
    def controller_db(self) -> Path:
        """The lab controller's store (its workflows' database lies beside it)."""
        return self.root / "medevac.db"

    @property
    def controller_store(self) -> list[Path]:
        """Every file of the lab controller's store: the store, its workflows'
        database, and SQLite's journals of both."""
        stems = (self.controller_db, self.root / "medevac-workflows.db")
        return [
            stem.with_name(stem.name + suffix)
            for stem in stems
            for suffix in ("", "-wal", "-shm", "-journal")
        ]

    @property
    def bmc_secrets(self) -> Path:
        return self.root / "bmc-secrets.toml"

    @property
    def agent_key(self) -> Path:
        return self.root / "agent.key"

    @property
    def faults_log(self) -> Path:
        return self.root / "faults.jsonl"

    def service_file(self, name: str) -> Path:
        return self.root / f"{name}.json"

    def service_log(self, name: str) -> Path:
        return self.root / f"{name}.log"

    def read_info(self) -> dict[str, Any] | None:
        try:
            data: dict[str, Any] = json.loads(self.info.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return None
        return data


def write_json_atomic(path: Path, data: Any, mode: int = 0o644) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True))
    tmp.chmod(mode)
    tmp.replace(path)


def write_text_atomic(path: Path, text: str, mode: int = 0o644) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    tmp.chmod(mode)
    tmp.replace(path)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True

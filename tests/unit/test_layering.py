"""Arrows point down: the product never imports the lab; blocks never import surfaces."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src" / "medevac"
SURFACES = ("medevac.api", "medevac.cli")


def imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found


def modules(*parts: str) -> list[Path]:
    return [p for p in SRC.rglob("*.py") if p.relative_to(SRC).parts[0] in parts]


def test_product_code_never_imports_the_lab() -> None:
    product = [
        p
        for p in SRC.rglob("*.py")
        if p.relative_to(SRC).parts[0] != "lab" and p.relative_to(SRC) != Path("cli/lab.py")
    ]
    offenders = {
        str(p.relative_to(SRC))
        for p in product
        if any(m.startswith("medevac.lab") for m in imports(p))
    }
    assert offenders == set()


def test_blocks_and_edges_never_import_surfaces_or_wiring() -> None:
    lower = modules(
        "monitor",
        "inspector",
        "notifier",
        "recovery",
        "profiler",
        "cloud",
        "bmc",
        "storage",
        "agent",
    )
    offenders = {
        str(p.relative_to(SRC))
        for p in lower
        if any(m.startswith((*SURFACES, "medevac.service")) for m in imports(p))
    }
    assert offenders == set()


BLOCKS = ("monitor", "inspector", "notifier", "recovery", "profiler")
# The data that flows down the pipeline, and the agent's wire format: the only things a
# block takes from another.
SHARED = {"medevac.monitor.verdicts", "medevac.notifier.events", "medevac.monitor.protocol"}


def test_edges_import_no_block_and_blocks_take_only_shared_data_from_each_other() -> None:
    offenders = set()
    for path in SRC.rglob("*.py"):
        own = path.relative_to(SRC).parts[0]
        if own not in (*BLOCKS, "cloud", "bmc", "storage", "agent"):
            continue
        for module in imports(path):
            parts = module.split(".")
            if len(parts) < 2 or parts[0] != "medevac" or parts[1] == own:
                continue
            if parts[1] in BLOCKS and (own not in (*BLOCKS, "agent") or module not in SHARED):
                offenders.add(f"{path.relative_to(SRC)} imports {module}")
    assert offenders == set()


def test_the_wiring_imports_no_surface() -> None:
    wiring = [*(SRC / "service").glob("*.py"), SRC / "serving.py"]
    assert len(wiring) >= 4
    offenders = {
        f"{p.name} imports {m}" for p in wiring for m in imports(p) if m.startswith(SURFACES)
    }
    assert offenders == set()

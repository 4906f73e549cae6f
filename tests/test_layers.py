"""The packages' dependencies point one way: ``pushbench`` (what both sides share) below ``servers`` and
``loadgen``, which never import each other, and ``analysis``, which reads results only (run.json, summary.csv)."""

from __future__ import annotations

import ast

from conftest import ROOT

# package -> the first-party packages it must not import
FORBIDDEN = {
    "pushbench": {"servers", "loadgen", "analysis", "tools"},
    "servers": {"loadgen", "analysis", "tools"},
    "loadgen": {"servers", "analysis", "tools"},
    "analysis": {"servers", "loadgen", "pushbench", "tools"},
}


def imported_packages(source: str) -> set[str]:
    """Top-level package names of every import in ``source`` (absolute imports only)."""
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found


def test_imported_packages_sees_plain_from_and_nested_imports() -> None:
    source = "import os, loadgen.conn\nfrom servers.state import X\nfrom . import y\ndef f():\n    import analysis\n"
    assert imported_packages(source) == {"os", "loadgen", "servers", "analysis"}


def test_no_package_imports_one_it_must_not() -> None:
    wrong = [
        f"{path.relative_to(ROOT)} imports {name}"
        for package, forbidden in FORBIDDEN.items()
        for path in sorted((ROOT / package).rglob("*.py"))
        for name in sorted(imported_packages(path.read_text()) & forbidden)
    ]
    assert wrong == []

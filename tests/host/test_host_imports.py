"""host/: the libraries (executor, validation, batch, server, ...) never import the command line (host/cli.py)."""
from __future__ import annotations

import ast
from pathlib import Path

HOST = Path(__file__).resolve().parents[2] / "host"


def imported_modules(path: Path, package: str) -> set[str]:
    """Every module a file imports, function-local imports included, as absolute names (`from . import cli` in
    kinema.host gives kinema.host and kinema.host.cli)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            parts = package.split(".")
            base = ".".join(parts[:len(parts) - node.level + 1]) if node.level else ""
            module = ".".join(p for p in (base, node.module or "") if p)
            found.add(module)
            found.update(f"{module}.{alias.name}" for alias in node.names)
    return found


def test_imported_modules_resolves_relative_imports(tmp_path):
    source = tmp_path / "m.py"
    source.write_text("from . import cli\nfrom .cli import main\nfrom .. import host\nimport kinema.host.cli\n"
                      "def f():\n    from ..host import cli as c\n")
    assert imported_modules(source, "kinema.host") >= {"kinema.host.cli", "kinema.host.cli.main", "kinema.host",
                                                       "kinema.host.cli"}
    assert "kinema.host" in imported_modules(source, "kinema.host")


def test_no_host_library_imports_the_cli():
    offenders = []
    for path in sorted(HOST.glob("*.py")):
        if path.name == "cli.py":
            continue
        bad = {m for m in imported_modules(path, "kinema.host") if m == "kinema.host.cli"
               or m.startswith("kinema.host.cli.")}
        offenders += [f"{path.name}: {m}" for m in sorted(bad)]
    assert not offenders, offenders

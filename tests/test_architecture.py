"""The import direction of design.md: ir <- rewrites; ir <- lowering <- codegen; root above all."""
import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
ALLOWED = {
    "ir": set(),
    "rewrites": {"ir"},
    "lowering": {"ir"},
    "codegen": {"ir", "lowering"},
}


def slimgraph_imports(path: Path) -> set[str]:
    """Top-level slimgraph folders a file imports (absolute `slimgraph.X` or relative `..X`)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level >= 2 and node.module:
                names = [f"slimgraph.{node.module}"]
            elif node.level >= 2:
                names = [f"slimgraph.{alias.name}" for alias in node.names]
            else:
                names = [node.module or ""] if node.level == 0 else []
        else:
            continue
        for name in names:
            parts = name.split(".")
            if parts[0] == "slimgraph":
                found.add(parts[1] if len(parts) > 1 else "<root>")
    return found


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_stage_folders_import_only_what_design_allows(package):
    for path in sorted((ROOT / package).rglob("*.py")):
        imported = slimgraph_imports(path) - {package}
        forbidden = imported - ALLOWED[package]
        assert not forbidden, f"{path.relative_to(ROOT)} imports {sorted(forbidden)}; {package}/ may use {sorted(ALLOWED[package])}"


def test_checker_sees_forbidden_imports(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("from slimgraph.codegen import build\nfrom ..lowering import to_relax\nimport slimgraph\n")
    assert slimgraph_imports(bad) == {"codegen", "lowering", "<root>"}

"""The package keeps its shape: folders as layers, imports one way, short files and
functions, and tests that lean on the kit rather than on each other."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "transformer"
LAYERS_CHECK = ROOT.parent / "shared" / "tools" / "layers_check.py"


def test_imports_run_one_way_between_the_folders():
    if not LAYERS_CHECK.is_file():
        pytest.skip(f"{LAYERS_CHECK} not found (it lies in ../shared beside the repository)")
    result = subprocess.run([sys.executable, str(LAYERS_CHECK), str(PACKAGE)], cwd=ROOT,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "findings 0" in result.stdout


def python_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*.py") if "__pycache__" not in p.parts)


def test_no_file_over_300_lines_and_no_function_over_80():
    long_files, long_functions = [], []
    for path in python_files(PACKAGE):
        text = path.read_text(encoding="utf-8")
        if text.count("\n") > 300:
            long_files.append(path.name)
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                if node.end_lineno - node.lineno + 1 > 80:
                    long_functions.append(f"{path.name}:{node.name}")
    assert long_files == [] and long_functions == []


def test_no_test_module_imports_another():
    for path in python_files(ROOT / "tests"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = [node.module or ""] if isinstance(node, ast.ImportFrom) else \
                [alias.name for alias in node.names] if isinstance(node, ast.Import) else []
            assert not any(name.startswith("test_") for name in names), path.name

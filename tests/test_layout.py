"""The code stays small enough to read: no module of semdb/ over 700 lines, no class over 350."""

import ast
from pathlib import Path

import semdb

MAX_MODULE_LINES = 700
MAX_CLASS_LINES = 350
PACKAGE = Path(semdb.__file__).parent


def modules():
    return sorted(PACKAGE.rglob("*.py"))


def test_no_module_over_the_limit():
    long = {
        str(p.relative_to(PACKAGE)): n for p in modules() if (n := len(p.read_text().splitlines())) > MAX_MODULE_LINES
    }
    assert not long, f"modules over {MAX_MODULE_LINES} lines: {long}"


def test_no_class_over_the_limit():
    long = {}
    for path in modules():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef) and node.end_lineno - node.lineno + 1 > MAX_CLASS_LINES:
                long[f"{path.relative_to(PACKAGE)}:{node.name}"] = node.end_lineno - node.lineno + 1
    assert not long, f"classes over {MAX_CLASS_LINES} lines: {long}"

"""The house's size rules, kept by a test rather than by memory: no module of the toolkit or the
sweeper over 350 lines, no function over 40 (tests, benchmarks and examples aside). A module or a
function that grows past them has become two jobs."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOURCES = [
    ROOT / "src",
    ROOT / "plugins" / "hydra_optuna_pruning_sweeper" / "optuna_pruning_sweeper",
    ROOT / "plugins" / "hydra_optuna_pruning_sweeper" / "hydra_plugins",
]
MODULE_LINES, FUNCTION_LINES = 350, 40


def modules() -> list[Path]:
    return sorted(path for source in SOURCES for path in source.rglob("*.py"))


def test_no_module_is_over_350_lines() -> None:
    long = {
        str(path.relative_to(ROOT)): n for path in modules() if (n := len(path.read_text().splitlines())) > MODULE_LINES
    }
    assert modules() and not long, f"modules over {MODULE_LINES} lines: {long}"


def test_no_function_is_over_40_lines() -> None:
    long = {}
    for path in modules():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                lines = node.end_lineno - node.lineno + 1
                if lines > FUNCTION_LINES:
                    long[f"{path.relative_to(ROOT)}:{node.lineno} {node.name}"] = lines
    assert not long, f"functions over {FUNCTION_LINES} lines: {long}"

"""The layer rules, read from the imports of every package module (lazy imports inside functions included).

The picture is a line: foundation (``churn.config``, ``errors``, ``io``, ``timebase``, ``vocab``) ->
``features`` -> ``model`` -> ``training`` / ``inference`` -> ``churn.cli``. Each layer may import itself and
the layers to its left; ``training`` and ``inference`` never import each other. See docs/ARCHITECTURE.md.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("churn", "features", "model", "training", "inference")
FOUNDATION = {"churn", "churn.config", "churn.errors", "churn.io", "churn.timebase", "churn.vocab", "churn.publish",
              "churn.redact", "churn.mlflow_runs"}
# churn modules that are neither foundation nor the CLI: the demo generator and its texts sit beside the CLI
# and may use the foundation and the feature contract only.
CHURN_TOOLS = {"churn.generate", "churn.demo_texts"}

ALLOWED: dict[str, set[str]] = {
    "foundation": set(),
    "features": {"features"},
    "model": {"features", "model"},
    "training": {"features", "model", "training"},
    "inference": {"features", "model", "inference"},
    "tools": {"features", "tools"},
    "cli": {"features", "model", "training", "inference", "tools", "cli"},
}
# the top: the CLI and the one orchestration module beside it (`churn refresh`: score, evaluate, retrain, promote)
TOP = {"churn.cli", "churn.refresh"}


def _layer(module: str) -> str:
    """The layer a project module belongs to."""
    if module in FOUNDATION:
        return "foundation"
    if module in TOP:
        return "cli"
    if module in CHURN_TOOLS:
        return "tools"
    top = module.split(".")[0]
    if top == "churn":
        return "foundation"  # a new churn.* module is foundation until the rules say otherwise
    return top


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def project_imports(path: Path) -> list[tuple[int, str]]:
    """(line, module) for every import of a project package in ``path``, at any depth (functions too)."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            # ``from model import metrics`` imports model.metrics: name the submodule when it is one
            base = node.module
            names = [f"{base}.{a.name}" if (ROOT / base.replace(".", "/") / f"{a.name}.py").exists() else base
                     for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level > 0:
            names = ["<relative>"]
        found += [(node.lineno, n) for n in names if n == "<relative>" or n.split(".")[0] in PACKAGES]
    return found


def _package_modules() -> list[Path]:
    return sorted(p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py"))


def violations() -> list[str]:
    """Every import that breaks a layer rule, as ``file:line: importer (layer) -> imported (layer)``."""
    bad = []
    for path in _package_modules():
        importer = _module_name(path)
        src = _layer(importer)
        for line, imported in project_imports(path):
            where = f"{path.relative_to(ROOT)}:{line}: {importer} ({src}) -> {imported}"
            if imported == "<relative>":
                bad.append(f"{where}: use absolute imports")
                continue
            dst = _layer(imported)
            if dst == "foundation" and imported.split(".")[0] == "churn" and imported not in FOUNDATION:
                bad.append(f"{where}: not a foundation module")
            elif dst != "foundation" and dst != src and dst not in ALLOWED[src]:
                bad.append(f"{where} ({dst})")
    return bad


def test_layer_rules_hold() -> None:
    assert violations() == []


def test_every_package_module_is_read() -> None:
    names = {_module_name(p) for p in _package_modules()}
    assert {"model.artifact", "model.registry", "model.fast_shap", "model.metrics", "churn.timebase",
            "churn.vocab", "inference.score", "training.train", "features.behavioral"} <= names


@pytest.mark.parametrize(("module", "source", "expected"), [
    ("inference.score", "def f():\n    from training.train import train\n", ["training.train"]),
    ("training.train", "import inference.score\n", ["inference.score"]),
    ("features.build", "from model.artifact import ChurnModel\n", ["model.artifact"]),
    ("model.artifact", "from inference import alerts\n", ["inference.alerts"]),
    ("churn.config", "from features import build\n", ["features.build"]),
    ("features.value", "from churn.cli import main\n", ["churn.cli"]),
], ids=["lazy-inference-to-training", "training-to-inference", "features-to-model", "model-to-inference",
        "foundation-to-features", "features-to-cli"])
def test_checker_catches_a_forbidden_import(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, module: str,
                                            source: str, expected: list[str]) -> None:
    """The checker is not vacuous: each forbidden edge planted in a fake tree is reported."""
    for pkg in PACKAGES:
        (tmp_path / pkg).mkdir()
        (tmp_path / pkg / "__init__.py").write_text("")
    for sub in ("train", "score", "alerts", "build", "artifact", "cli", "value", "config"):
        for pkg in PACKAGES:
            (tmp_path / pkg / f"{sub}.py").write_text("")
    target = tmp_path / Path(*module.split(".")).with_suffix(".py")
    target.write_text(source)
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    found = violations()
    assert len(found) == 1 and found[0].split(" -> ")[1].split(" ")[0] == expected[0], found


def test_allowed_imports_pass(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for pkg in PACKAGES:
        (tmp_path / pkg).mkdir()
        (tmp_path / pkg / "__init__.py").write_text("")
    (tmp_path / "model" / "artifact.py").write_text("from features import build\nimport churn.errors\n")
    (tmp_path / "features" / "build.py").write_text("from churn.timebase import DAY\n")
    (tmp_path / "inference" / "score.py").write_text("def f():\n    from model.artifact import ChurnModel\n")
    (tmp_path / "churn" / "cli.py").write_text("from training import train\nfrom inference import score\n")
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    assert violations() == []


def test_no_package_function_over_80_lines():
    """Issue 10: pipelines are short named steps; no function in the package code exceeds 80 lines."""
    import ast

    long = []
    for pkg in ("churn", "features", "model", "training", "inference"):
        for path in sorted((ROOT / pkg).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    n = node.end_lineno - node.lineno + 1
                    if n > 80:
                        long.append(f"{path.relative_to(ROOT)}::{node.name} ({n} lines)")
    assert not long, "functions over 80 lines: " + ", ".join(long)

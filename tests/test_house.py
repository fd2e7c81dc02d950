"""ARCHITECTURE.md's promise "tests mirror the modules", checked: every module of rawnet2_jax/,
train/ and convert/ has tests/test_<name>.py or a line in the test map naming test files that
exist and mention it."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _test_map() -> dict[str, list[str]]:
    text = (ROOT / "ARCHITECTURE.md").read_text()
    block = text.split("<!-- test-map -->", 1)[1].split("<!-- /test-map -->", 1)[0]
    rows = {}
    for line in block.strip().splitlines():
        module, files = line.removeprefix("- ").split(":", 1)
        rows[module.strip()] = files.split()
    return rows


def _modules() -> list[Path]:
    mods = []
    for pkg in ("rawnet2_jax", "train", "convert"):
        mods += [p for p in (ROOT / pkg).rglob("*.py") if p.name not in ("__init__.py", "__main__.py")]
    return sorted(mods)


def test_every_module_has_its_tests():
    rows = _test_map()
    untested = []
    for mod in _modules():
        rel = mod.relative_to(ROOT).as_posix()
        if (ROOT / "tests" / f"test_{mod.stem}.py").exists():
            assert rel not in rows, f"{rel} has tests/test_{mod.stem}.py: drop its test-map line"
        elif rel not in rows:
            untested.append(rel)
    assert not untested, f"modules with no tests/test_<name>.py and no test-map line: {untested}"


def _public_names(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    return {n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef)) and not n.name.startswith("_")}


def test_the_map_names_real_test_files_that_use_the_module():
    wrong = []
    for rel, files in _test_map().items():
        assert (ROOT / rel).exists(), f"test map names {rel}, which does not exist"
        assert files, f"{rel}: no test files"
        stem, dotted = Path(rel).stem, rel.removesuffix(".py").replace("/", ".")
        for name in files:
            path = ROOT / "tests" / name
            if not path.exists():
                wrong.append(f"{rel}: {name} does not exist")
                continue
            src = path.read_text()
            # uses the module: names it (or its CLI flag, --codec-cache), or calls / builds
            # something it defines
            names = {stem, stem.replace("_", "-")} | _public_names(ROOT / rel)
            if dotted not in src and not any(re.search(rf"\b{n}\b", src) for n in names):
                wrong.append(f"{rel}: {name} uses nothing of it")
    assert not wrong, "; ".join(wrong)


# A function fits on a screen: at most this many lines of body (its docstring not counted).
SCREEN_LINES = 50
# Known to be longer, each being split by its owner; an entry may go once it fits.
LONGER_FOR_NOW: set[str] = set()


def _long_functions(path: Path, limit: int) -> list[tuple[str, int]]:
    """``(Class.function, body lines)`` of every function in ``path`` longer than ``limit``."""
    found = []

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                body = child.body
                if isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
                        and isinstance(body[0].value.value, str) and len(body) > 1:
                    body = body[1:]  # the docstring
                lines = body[-1].end_lineno - body[0].lineno + 1
                if lines > limit:
                    found.append((prefix + child.name, lines))
                visit(child, prefix + child.name + ".")
            elif isinstance(child, ast.ClassDef):
                visit(child, prefix + child.name + ".")

    visit(ast.parse(path.read_text()), "")
    return found


def test_functions_fit_on_a_screen():
    long = []
    for pkg in ("rawnet2_jax", "train", "convert", "bench"):
        for path in sorted((ROOT / pkg).rglob("*.py")):
            rel = path.relative_to(ROOT).as_posix()
            long += [f"{rel}:{name} ({n} lines)" for name, n in _long_functions(path, SCREEN_LINES)
                     if f"{rel}:{name}" not in LONGER_FOR_NOW]
    assert not long, f"functions over {SCREEN_LINES} body lines: {long}; split them into named pieces"


# The sub-packages are the lower floors: they use the shared base modules and one another, never
# the modules built on them (plots, scoring, evaluation, the CLIs).
LOWER_PACKAGES = ("augment", "data", "metrics")
BASE_MODULES = {"audio", "cliutil", "config", "errors", "fsutil", "overrides"} | set(LOWER_PACKAGES)


def _rawnet2_imports(path: Path) -> set[str]:
    """The first name after ``rawnet2_jax.`` of every import in ``path`` (function-level ones too)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        mods = [a.name for a in node.names] if isinstance(node, ast.Import) else \
            [node.module or ""] if isinstance(node, ast.ImportFrom) and node.level == 0 else []
        if isinstance(node, ast.ImportFrom) and node.module == "rawnet2_jax":
            mods = [f"rawnet2_jax.{a.name}" for a in node.names]
        found |= {m.split(".")[1] for m in mods if m.startswith("rawnet2_jax.")}
    return found


def test_lower_packages_import_no_higher_module():
    upward = []
    for pkg in LOWER_PACKAGES:
        for path in sorted((ROOT / "rawnet2_jax" / pkg).rglob("*.py")):
            upward += [f"{path.relative_to(ROOT)} -> rawnet2_jax.{m}" for m in sorted(_rawnet2_imports(path) - BASE_MODULES)]
    assert not upward, f"imports upward (a lower package using a module built on it): {upward}"

"""The core stays small: it never imports a backend library, and every hook is documented and tested."""

from __future__ import annotations

import ast
import inspect
import re
import subprocess
import sys
from pathlib import Path

import dropin
from dropin import hookspecs

CORE = Path(dropin.__file__).parent
TESTS = Path(__file__).parent
FORBIDDEN = {"openvino", "cv2", "onnxruntime"}


def test_core_source_never_imports_backend_libraries() -> None:
    offenders = []
    for path in CORE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            offenders += [f"{path.relative_to(CORE)}: {n}" for n in names if n.split(".")[0] in FORBIDDEN]
    assert not offenders, offenders


def test_importing_every_core_module_loads_no_backend_library() -> None:
    modules = sorted(
        "dropin." + ".".join(p.relative_to(CORE).with_suffix("").parts)
        for p in CORE.rglob("*.py")
        if p.name not in ("__main__.py",) and "_proto" not in p.parts
    )
    code = (
        "import importlib, sys\n"
        f"for m in {modules!r}: importlib.import_module(m)\n"
        f"print(sorted(set(m.split('.')[0] for m in sys.modules) & {FORBIDDEN!r}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


def hook_names() -> list[str]:
    return [name for name, fn in inspect.getmembers(hookspecs, inspect.isfunction) if name.startswith("dropin_")]


def test_every_hook_has_a_docstring() -> None:
    names = hook_names()
    assert names, "no hooks found"
    for name in names:
        doc = inspect.getdoc(getattr(hookspecs, name)) or ""
        assert len(doc) > 60, f"hook {name} needs a docstring saying when it is called and what to return"


def test_every_hook_is_implemented_by_a_test_plugin() -> None:
    sources = "\n".join(p.read_text() for p in TESTS.glob("test_*.py") if p.name != Path(__file__).name)
    missing = [name for name in hook_names() if not re.search(rf"def {name}\(", sources)]
    assert not missing, f"hooks with no test that implements them: {missing}"

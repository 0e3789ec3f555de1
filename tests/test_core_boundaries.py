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


def test_the_core_tests_need_no_plugin() -> None:
    """tests/ runs with only the core and its test extra installed: no test imports a first-party
    plugin or a library only a plugin brings (each plugin's tests live in plugins/<name>/tests)."""
    plugins = {"dropin_openvino", "dropin_onnxruntime", "dropin_image"}
    offenders = []
    for path in sorted(TESTS.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            offenders += [f"{path.name}: {n}" for n in names if n.split(".")[0] in FORBIDDEN | plugins]
    assert not offenders, offenders


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


# -- docs/plugins.md: every hook documented (datasette's test_docs, for dropin) ----------------

GUIDE = TESTS.parent / "docs" / "plugins.md"


def documented_hooks() -> list[str]:
    """Hooks with a section of their own: a heading "### `dropin_...(...)`"."""
    return re.findall(r"^### `(dropin_\w+)\(", GUIDE.read_text(), re.M)


def test_every_hook_has_a_section_in_the_plugin_guide() -> None:
    missing = sorted(set(hook_names()) - set(documented_hooks()))
    assert not missing, f"hooks with no '### `name(...)`' section in docs/plugins.md: {missing}"


def test_every_hook_section_documents_a_real_hook() -> None:
    documented = documented_hooks()
    unknown = sorted(set(documented) - set(hook_names()))
    assert not unknown, f"docs/plugins.md documents hooks that hookspecs.py does not declare: {unknown}"
    assert len(documented) == len(set(documented)), "a hook is documented twice"


def test_every_hook_section_says_when_what_and_what_to_return() -> None:
    text = GUIDE.read_text()
    for name in hook_names():
        parts = re.split(rf"^### `{name}\(.*$", text, maxsplit=1, flags=re.M)
        assert len(parts) == 2, f"{name} has no section in docs/plugins.md"
        section = parts[1]
        section = re.split(r"^##", section, maxsplit=1, flags=re.M)[0]
        for label in ("**When:**", "**Receives:**", "**Returns:**"):
            assert label in section, f"the section of {name} has no {label}"
        assert f"def {name}(" in section, f"the section of {name} has no example implementing it"


def test_the_plugin_guide_links_resolve() -> None:
    text = GUIDE.read_text()
    anchors = set()
    for heading in re.findall(r"^#+ (.+)$", text, re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        anchors.add(slug)
    links = re.findall(r"\]\(#([^)]+)\)", text)
    assert links
    broken = sorted({link for link in links if link not in anchors})
    assert not broken, f"links to no heading in docs/plugins.md: {broken}"
    for path in re.findall(r"\]\((\.\./[^)#]+)\)", text):
        assert (GUIDE.parent / path).exists(), path


# -- module size: rooms a newcomer finds in one guess -----------------------------------------

MAX_MODULE_LINES = 400


def long_modules(root: Path) -> dict[str, int]:
    """The modules of the core and the plugins' packages (generated code and tests aside) over
    MAX_MODULE_LINES lines, by path under `root`."""
    paths = [*(root / "core" / "dropin").rglob("*.py"), *(root / "plugins").glob("*/dropin_*/**/*.py")]
    counts = {str(p.relative_to(root)): len(p.read_text().splitlines()) for p in paths if "_proto" not in p.parts}
    return {path: n for path, n in sorted(counts.items()) if n > MAX_MODULE_LINES}


def test_no_module_is_over_400_lines() -> None:
    # a module that outgrows this is split along its sections, each named by what it does
    assert not long_modules(TESTS.parent), long_modules(TESTS.parent)

"""The package layout: the import graph of ``containerfs`` (emulator aside) has no cycle, even
counting imports made only for type checking or inside functions, and the layer boundaries
hold (only the API transport imports httpx, only the FUSE adapter and the daemon import
pyfuse3, ``containerfs mount`` loads no emulator code).

Run as a script (``python tests/test_layout.py [PACKAGE_DIR]``) it prints the graph, one
``module -> imports`` line each, and any cycles.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "containerfs"


def _module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(tree: ast.AST, module: str, is_package: bool) -> Iterator[str]:
    """Every module named by an import statement anywhere in the file."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = module.split(".")
                anchor = anchor if is_package else anchor[:-1]
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            yield base
            # ``from pkg import mod`` names a module too
            yield from (f"{base}.{alias.name}" for alias in node.names)


def import_graph(root: Path = PACKAGE) -> dict[str, set[str]]:
    """Module -> the package modules it imports (emulator excluded, packages excluded as
    targets unless imported for a name they define themselves)."""
    files = {_module_name(root, p): p for p in root.rglob("*.py") if "emulator" not in p.parts}
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        tree = ast.parse(path.read_text())
        targets = set()
        for target in _imports(tree, name, path.name == "__init__.py"):
            if target in files and target != name and not _is_bare_package(files[target]):
                targets.add(target)
        graph[name] = targets
    return graph


def _is_bare_package(path: Path) -> bool:
    """An ``__init__`` with nothing but a docstring and ``__version__``: importing a submodule
    runs it, but it cannot take part in a cycle."""
    if path.name != "__init__.py":
        return False
    body = ast.parse(path.read_text()).body
    return all(isinstance(s, ast.Expr | ast.Assign) for s in body)


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def _third_party_importers(library: str) -> list[str]:
    found = []
    for p in PACKAGE.rglob("*.py"):
        if "emulator" in p.parts:
            continue
        for node in ast.walk(ast.parse(p.read_text())):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom) and not node.level
                else []
            )
            if any(n == library or n.startswith(library + ".") for n in names):
                found.append(str(p.relative_to(PACKAGE)))
                break
    return sorted(found)


def test_the_package_has_no_import_cycle() -> None:
    assert cycles(import_graph()) == []


def test_a_cycle_is_found_when_there_is_one() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_only_the_api_transport_imports_httpx() -> None:
    assert _third_party_importers("httpx") == ["api/transport.py"]


def test_only_the_fuse_adapter_package_and_the_daemon_import_pyfuse3() -> None:
    assert _third_party_importers("pyfuse3") == [
        "daemon/mount.py",
        "fs/attrs.py",
        "fs/operations.py",
    ]


def test_the_mount_path_loads_no_emulator_code() -> None:
    probe = (
        "import sys, containerfs.cli, containerfs.daemon.mount\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in "
        "('starlette', 'uvicorn', 'multipart', 'python_multipart') "
        "or m.startswith('containerfs.emulator')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"


def _loads(tmp_path: Path, argv: list[str], loaded: str) -> tuple[str, str]:
    """Run ``containerfs ARGV`` in a fresh interpreter: its exit status and ``loaded`` (an
    expression over ``sys.modules``) on one line, and its stderr."""
    probe = (
        "import sys\n"
        "from containerfs.cli import main\n"
        "try:\n"
        "    status = main(sys.argv[1:])\n"
        "except SystemExit as exit:\n"
        "    status = exit.code\n"
        f"print(status, {loaded})"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe, *argv],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=60,
    )
    return done.stdout.splitlines()[-1], done.stderr


_STACK = "sorted({m.split('.')[0] for m in sys.modules} & {'trio', 'httpx', 'pyfuse3'})"


@pytest.mark.parametrize("command", ["sync", "new", "import"])
def test_the_commands_that_talk_to_a_daemon_load_no_event_loop_or_http(
    command: str, tmp_path: Path
) -> None:
    """``containerfs sync`` is run after every batch of writes in scripts: it starts in the
    time Python takes, not the time trio and httpx take to import."""
    args = {"new": ["new", "c"], "import": ["import", "file-x", str(tmp_path)]}.get(command)
    last, err = _loads(tmp_path, args or [command, str(tmp_path)], _STACK)
    assert last.split(" ", 1)[1] == "[]", err


def test_status_loads_no_layer_of_the_daemon(tmp_path: Path) -> None:
    """``containerfs status`` reads typed snapshots (``snapshots.py``), not the layers that
    fill them: it starts in a tenth of a second, not the time trio and httpx take."""
    layers = (
        "sorted(m for m in sys.modules if m.split('.')[:2] in "
        "(['containerfs', 'read'], ['containerfs', 'write'], ['containerfs', 'ns'], "
        "['containerfs', 'fs']))"
    )
    last, err = _loads(tmp_path, ["status", str(tmp_path)], f"{_STACK}, {layers}")
    assert last == "1 [] []", err


def test_sync_starts_without_the_mount_options_or_the_models(tmp_path: Path) -> None:
    """``containerfs sync`` parses its own command line alone: the full parser loads the
    mount's option table (config, the API's retry policy) and the models, half its start."""
    heavy = (
        "sorted(m for m in sys.modules if m in "
        "('containerfs.config', 'containerfs.models', 'containerfs.paths', "
        "'containerfs.cli_options', 'containerfs.api.retrying'))"
    )
    last, err = _loads(tmp_path, ["sync", str(tmp_path)], heavy)
    assert last == "1 []", err
    assert "no containerfs daemon serves" in err


_WITHOUT_EMULATOR_EXTRA = """
import sys

class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {"starlette", "uvicorn", "multipart", "python_multipart"}:
            raise ImportError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, Block())
from containerfs.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.parametrize("command", [["emulator", "--port", "0"], ["demo", "mnt"]])
def test_without_the_emulator_extra_the_emulator_commands_say_how_to_install_it(
    command: list[str], tmp_path: Path
) -> None:
    done = subprocess.run(
        [sys.executable, "-c", _WITHOUT_EMULATOR_EXTRA, *command],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=60,
    )
    assert done.returncode == 1
    assert done.stdout == ""
    [line] = done.stderr.splitlines()
    assert "pip install 'containerfs[emulator]'" in line
    assert not (tmp_path / "mnt").exists()  # the demo started nothing


def test_without_the_emulator_extra_mount_still_parses() -> None:
    done = subprocess.run(
        [sys.executable, "-c", _WITHOUT_EMULATOR_EXTRA, "mount", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0 and "MOUNTPOINT" in done.stdout.upper()


if __name__ == "__main__":
    root = Path(sys.argv[1]).resolve() if len(sys.argv) > 1 else PACKAGE
    graph = import_graph(root)
    for module in sorted(graph):
        short = sorted(t.removeprefix("containerfs.") for t in graph[module])
        print(f"{module.removeprefix('containerfs.') or '__init__'} -> {' '.join(short)}")
    print("cycles:", cycles(graph) or "none")

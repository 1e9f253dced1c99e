"""The sandbox's modules depend on each other one way; its names do not shadow the provider's."""

from __future__ import annotations

import ast
import subprocess
import sys
import typing
from pathlib import Path

import airflow_provider_packly.sandbox as sandbox_package
from airflow_provider_packly.sandbox import errors
from airflow_provider_packly.sandbox.__main__ import build_parser
from airflow_provider_packly.sandbox.fault_kinds import EVERY_FAULT_KIND, FAULT_KINDS, RESPONSE_FAULT_KINDS

from .helpers import ROOT

PACKAGE = "airflow_provider_packly.sandbox"
SANDBOX_DIR = Path(sandbox_package.__file__).parent


def _imports(path: Path) -> set[str]:
    """The sandbox modules ``path`` imports, anywhere in it (``TYPE_CHECKING`` blocks included)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names: list[str] = []
        if isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        found.update(name.removeprefix(PACKAGE + ".") for name in names if name.startswith(PACKAGE + "."))
    modules = {module.stem for module in SANDBOX_DIR.glob("*.py")}
    return {name.split(".")[0] for name in found} & modules


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle in ``graph``, as the list of modules along it, or ``None``."""
    done: set[str] = set()

    def visit(module: str, path: list[str]) -> list[str] | None:
        if module in path:
            return [*path[path.index(module) :], module]
        if module in done:
            return None
        for dependency in sorted(graph.get(module, set())):
            found = visit(dependency, [*path, module])
            if found:
                return found
        done.add(module)
        return None

    for module in sorted(graph):
        found = visit(module, [])
        if found:
            return found
    return None


def test_the_cycle_finder_finds_the_old_circle() -> None:
    # app -> state -> faults -> state (a TYPE_CHECKING import counts: it is a dependency too).
    old = {"app": {"state", "faults"}, "state": {"faults", "app"}, "faults": {"state"}}
    assert _cycle(old) is not None
    assert _cycle({"app": {"state"}, "state": {"faults"}, "faults": set()}) is None


def test_sandbox_modules_import_each_other_one_way() -> None:
    graph = {path.stem: _imports(path) - {path.stem} for path in SANDBOX_DIR.glob("*.py")}
    assert _cycle(graph) is None, f"import cycle: {' -> '.join(_cycle(graph) or [])}"
    # The layers the modules' docstrings describe: faults knows neither state nor app.
    assert graph["faults"] <= {"errors", "fault_kinds", "responses"}
    assert graph["config"] <= {"faults"}
    assert graph["state"] <= {"config", "faults"}
    assert graph["fault_kinds"] == set()


def test_annotations_resolve_without_the_app_module() -> None:
    # Before, state.py and faults.py named SandboxConfig / SandboxState only for the type
    # checker (the circle), so their annotations could not be resolved at run time.
    code = (
        "import sys, typing\n"
        "from airflow_provider_packly.sandbox.state import SandboxState\n"
        "from airflow_provider_packly.sandbox.faults import FaultInjectionMiddleware\n"
        "typing.get_type_hints(SandboxState.__init__)\n"
        "typing.get_type_hints(FaultInjectionMiddleware.__init__)\n"
        "assert 'airflow_provider_packly.sandbox.app' not in sys.modules, 'state imported the app'\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert result.returncode == 0, result.stderr


def test_the_state_satisfies_what_the_fault_middleware_needs() -> None:
    from airflow_provider_packly.sandbox.faults import FaultLedger
    from airflow_provider_packly.sandbox.state import SandboxState

    needed = {name for name in vars(FaultLedger) if not name.startswith("_")}
    assert needed == {"decide_fault", "count_token_request", "force_revocation"}
    for name in needed:
        assert typing.get_type_hints(getattr(SandboxState, name)) == typing.get_type_hints(
            getattr(FaultLedger, name)
        ), name


def test_the_sandbox_error_does_not_shadow_the_providers_packly_error() -> None:
    assert not hasattr(errors, "PacklyError")
    assert errors.EnvelopeError.__name__ != "PacklyError"


def test_fault_kinds_are_written_once() -> None:
    # --help's default and the soak's lists come from fault_kinds, not from copies.
    from scripts import soak

    fault_kinds = next(action for action in build_parser()._actions if action.dest == "fault_kinds")
    assert fault_kinds.default == ",".join(FAULT_KINDS)
    assert soak.FAULT_KINDS is EVERY_FAULT_KIND and soak.TOKEN_FAULT_KINDS is RESPONSE_FAULT_KINDS
    for path in [*SANDBOX_DIR.glob("*.py"), *(ROOT / "scripts").glob("*.py")]:
        if path.name != "fault_kinds.py":
            assert not _kind_lists(path), f"{path} lists fault kinds again: {_kind_lists(path)}"


def _kind_lists(path: Path) -> list[list[str]]:
    """Literal lists, tuples or comma-separated strings of three or more fault kinds in ``path``."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        words: list[str] = []
        if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
            words = [item.value for item in node.elts if isinstance(item, ast.Constant) and isinstance(item.value, str)]
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and "," in node.value:
            words = [word.strip() for word in node.value.split(",")]
        kinds = [word for word in words if word in EVERY_FAULT_KIND]
        if len(kinds) >= 3:
            found.append(kinds)
    return found


def test_the_kind_list_finder_finds_a_copy(tmp_path: Path) -> None:
    copy = tmp_path / "copy.py"
    copy.write_text('KINDS = ("500", "502", "reset")\nDEFAULT = "500,502,503,429"\n')
    assert _kind_lists(copy) == [["500", "502", "reset"], ["500", "502", "503", "429"]]

"""The rules of the package's layout, checked over its source with ``ast`` (docs/architecture.md, "Rules").

Each rule follows the package's own imports transitively (module level and inside functions, since a function's
import runs too; ``if TYPE_CHECKING:`` blocks never run and are skipped), so a rule cannot be dodged by importing
through another module. A failure names the chain of imports that breaks the rule.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest

import airflow_provider_openai_batch

PACKAGE = airflow_provider_openai_batch.__name__
ROOT = Path(airflow_provider_openai_batch.__file__).parent

#: The planner, its state and its record decide; they never pay and never need Airflow.
PURE = ("lifecycle.plan", "lifecycle.state", "lifecycle.record")
#: The one place the reader may import Airflow: the opener of URLs that name an Airflow connection.
READER_URL_OPENER = (f"{PACKAGE}.files", "_object_storage_path")
#: What a hook must never import: the Airflow roles built on top of it.
ABOVE_HOOKS = ("operators", "triggers", "links", "decorators")


@dataclass(frozen=True)
class Import:
    module: str  # the importing module
    function: str | None  # the function the import runs in; None at module level
    target: str  # the module imported (a package module, or an outside one such as "openai.types")


def _module_files() -> dict[str, Path]:
    modules = {}
    for path in ROOT.rglob("*.py"):
        parts = path.relative_to(ROOT).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join((PACKAGE, *parts))] = path
    return modules


MODULES = _module_files()


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _walk(node: ast.AST, function: str | None) -> Iterator[tuple[ast.AST, str | None]]:
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.If) and _is_type_checking(child):
            for orelse in child.orelse:
                yield from _walk(orelse, function)
            continue
        inner = child.name if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)) else function
        yield child, inner
        yield from _walk(child, inner)


def _absolute(module: str, level: int, name: str | None) -> str:
    if not level:
        return name or ""
    is_package = MODULES[module].name == "__init__.py"
    base = module.split(".")
    base = base[: len(base) - level + (1 if is_package else 0)]
    return ".".join([*base, name] if name else base)


@cache
def imports_of(module: str) -> tuple[Import, ...]:
    tree = ast.parse(MODULES[module].read_text(), filename=str(MODULES[module]))
    found = []
    for node, function in _walk(tree, None):
        if isinstance(node, ast.Import):
            found += [Import(module, function, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            source = _absolute(module, node.level, node.module)
            # `from package import module` imports that module; `from module import name` the module itself.
            submodules = [f"{source}.{a.name}" for a in node.names if f"{source}.{a.name}" in MODULES]
            found += [Import(module, function, target) for target in submodules]
            if len(submodules) < len(node.names):
                found.append(Import(module, function, source))
    return tuple(found)


def _package_modules(target: str) -> list[str]:
    """The package modules importing ``target`` runs: every package above it, then the module."""
    parts = target.split(".")
    return [m for m in (".".join(parts[:n]) for n in range(1, len(parts) + 1)) if m in MODULES]


def reach(start: str, skip: tuple[str, str] | None = None) -> dict[str, list[Import]]:
    """Every import ``start`` can run, directly or through package modules, with the chain that leads to it.

    A module imported by name may have any of its functions called, so their imports count; a package that
    only runs because a module inside it is imported runs its module level alone (the package's lazy
    ``__getattr__`` is not reached by importing ``airflow_provider_openai_batch.lifecycle.plan``).

    :param skip: ``(module, function)`` whose imports are not followed (an allowed exception, and what it
        brings in).
    """
    chains: dict[str, list[Import]] = {}
    seen = {(start, True)}
    todo: list[tuple[str, bool, list[Import]]] = [(start, True, [])]
    while todo:
        module, whole, chain = todo.pop()
        for imp in imports_of(module):
            if (imp.function is not None and not whole) or (imp.module, imp.function) == skip:
                continue
            path = [*chain, imp]
            chains.setdefault(imp.target, path)
            for inner in _package_modules(imp.target):
                key = (inner, inner == imp.target)
                if key not in seen:
                    seen.add(key)
                    todo.append((*key, path))
    return chains


def _outside(target: str, top: str) -> bool:
    return target == top or target.startswith(top + ".")


def _show(chain: list[Import]) -> str:
    return " -> ".join(
        f"{i.module}{f'.{i.function}()' if i.function else ''} imports {i.target}" for i in chain
    )


def violations(start: str, forbidden: tuple[str, ...], allowed: tuple[str, str] | None = None) -> list[str]:
    """The chains by which ``start`` reaches a module under one of ``forbidden`` (absolute names), except
    through the imports of the function ``allowed`` (``(module, function)``)."""
    return sorted(
        _show(chain)
        for target, chain in reach(start, skip=allowed).items()
        if any(_outside(target, top) for top in forbidden)
    )


# ------------------------------------------------------------------------------------------------ the rules
@pytest.mark.parametrize("name", [p for p in PURE if f"{PACKAGE}.{p}" in MODULES])
def test_the_planner_its_state_and_record_never_import_the_sdk_or_airflow(name):
    assert violations(f"{PACKAGE}.{name}", ("openai", "airflow")) == []


@pytest.mark.parametrize("name", sorted(m for m in MODULES if _outside(m, f"{PACKAGE}.reader")))
def test_the_reader_never_imports_airflow_outside_its_url_opener(name):
    assert violations(name, ("airflow",), allowed=READER_URL_OPENER) == []


@pytest.mark.parametrize("name", sorted(m for m in MODULES if _outside(m, f"{PACKAGE}.hooks")))
def test_hooks_import_no_operator_trigger_or_link(name):
    assert violations(name, tuple(f"{PACKAGE}.{role}" for role in ABOVE_HOOKS)) == []


# ---------------------------------------------------------------------------- the checker itself can fail
def test_the_checker_follows_imports_through_other_modules():
    # The operator module imports no `openai` itself, yet reaches it through the modules it imports.
    operator = f"{PACKAGE}.operators.openai_batch"
    assert not any(_outside(i.target, "openai") for i in imports_of(operator))
    [chain] = [c for c in violations(operator, ("openai",)) if c.endswith(" imports openai")]
    assert chain.startswith(f"{operator} imports {PACKAGE}.") and chain.count(" -> ") >= 1


def test_the_checker_sees_imports_inside_functions_and_allows_only_the_opener():
    opener_module, opener = READER_URL_OPENER
    found = violations(opener_module, ("airflow",))
    assert found and all(f"{opener}() imports " in chain for chain in found)
    assert violations(opener_module, ("airflow",), allowed=READER_URL_OPENER) == []


def test_a_package_run_for_a_module_inside_it_runs_its_module_level_only():
    # The package's lazy __getattr__ imports the reader; importing a submodule never calls it.
    assert f"{PACKAGE}.reader" in reach(PACKAGE)
    assert f"{PACKAGE}.reader" not in reach(f"{PACKAGE}.lifecycle.plan")


def test_relative_and_package_imports_resolve_to_modules():
    assert _absolute(f"{PACKAGE}.lifecycle.plan", 1, "state") == f"{PACKAGE}.lifecycle.state"
    assert _absolute(f"{PACKAGE}.reader", 1, "join") == f"{PACKAGE}.reader.join"
    assert _package_modules(f"{PACKAGE}.lifecycle.plan") == [
        PACKAGE,
        f"{PACKAGE}.lifecycle",
        f"{PACKAGE}.lifecycle.plan",
    ]

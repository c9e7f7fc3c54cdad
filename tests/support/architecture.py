"""Reading a package's source with ``ast`` for the architecture's rules: who imports whom (also inside
functions), the layer table of docs/architecture.md, import cycles, what ``__all__`` lists.

Pure functions of a source tree, so each rule's test can also run them on a small planted tree and see
the violation reported.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Import:
    source: str  # the importing module's dotted name
    target: str  # the imported module's dotted name (a package's name for names its __init__ defines)
    file: str  # the importing file, relative to the package's parent
    line: int


def module_name(package_dir: Path, path: Path) -> str:
    parts = list(path.relative_to(package_dir.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules(package_dir: Path) -> dict[str, Path]:
    """Every module of the package by dotted name (a package by its ``__init__.py``)."""
    return {module_name(package_dir, p): p for p in sorted(package_dir.rglob("*.py"))}


def imports(package_dir: Path) -> list[Import]:
    """Every import of one of the package's own modules, anywhere in a module (relative ones resolved)."""
    package = package_dir.name
    known = modules(package_dir)
    found = []
    for name, path in known.items():
        rel = path.relative_to(package_dir.parent).as_posix()
        here = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), rel)):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    base = ".".join(here[: len(here) - node.level + 1] + ([base] if base else []))
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
            for target in targets:
                if target == package or target.startswith(package + "."):
                    found.append(Import(name, target, rel, node.lineno))
    return found


def unit_of(package_dir: Path, module: str) -> str:
    """The row of the layer table a module belongs to: ``folder/`` for ``pkg.folder.layout``, ``errors.py``
    for ``pkg.errors``, ``__init__.py`` for the package itself."""
    parts = module.split(".")[1:]
    if not parts:
        return "__init__.py"
    return f"{parts[0]}/" if (package_dir / parts[0]).is_dir() else f"{parts[0]}.py"


_TABLE = re.compile(r"<!-- layers: begin -->(.*?)<!-- layers: end -->", re.S)


def read_layer_table(markdown: str) -> dict[str, set[str]]:
    """``unit -> units it names`` from the table between the ``layers`` markers of a markdown text."""
    block = _TABLE.search(markdown)
    if block is None:
        raise ValueError("no '<!-- layers: begin -->' ... '<!-- layers: end -->' table")
    table: dict[str, set[str]] = {}
    for row in block.group(1).strip().splitlines()[2:]:  # after the header and the --- line
        cells = [c.strip() for c in row.strip().strip("|").split("|")]
        unit = cells[0].strip("`")
        table[unit] = set(re.findall(r"`([^`]+)`", cells[1] if len(cells) > 1 else ""))
    return table


def allowed(table: Mapping[str, set[str]]) -> dict[str, set[str]]:
    """Each unit with everything it may import: itself, its row, and what those may import."""
    result = {}
    for unit in table:
        seen, todo = {unit}, list(table[unit])
        while todo:
            name = todo.pop()
            if name not in seen:
                seen.add(name)
                todo.extend(table.get(name, ()))
        result[unit] = seen
    return result


def layer_violations(package_dir: Path, table: Mapping[str, set[str]]) -> list[str]:
    """One line per import the table does not allow (or per module whose unit has no row)."""
    may = allowed(table)
    problems = [f"{p.relative_to(package_dir.parent).as_posix()}: {unit_of(package_dir, m)} has no row in the table"
                for m, p in modules(package_dir).items() if unit_of(package_dir, m) not in may]
    for imp in imports(package_dir):
        source, target = unit_of(package_dir, imp.source), unit_of(package_dir, imp.target)
        if source in may and target not in may[source]:
            problems.append(f"{imp.file}:{imp.line} imports {imp.target}: {source} may not import {target}")
    return problems


def cycles(package_dir: Path) -> list[list[str]]:
    """Groups of modules that import each other, directly or around a circle (strongly connected)."""
    graph: dict[str, set[str]] = {m: set() for m in modules(package_dir)}
    for imp in imports(package_dir):
        if imp.target in graph and imp.target != imp.source:
            graph[imp.source].add(imp.target)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:  # Tarjan's algorithm
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                item = stack.pop()
                group.append(item)
                if item == node:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def _assigned(target: ast.expr) -> Iterator[str]:
    if isinstance(target, ast.Name):
        yield target.id
    elif isinstance(target, (ast.Tuple, ast.List)):
        for element in target.elts:
            yield from _assigned(element)


def _root(value: ast.expr) -> str | None:
    while isinstance(value, ast.Attribute):
        value = value.value
    return value.id if isinstance(value, ast.Name) else None


def foreign_all_names(package_dir: Path) -> dict[str, list[str]]:
    """Names a module (not a package's ``__init__``) lists in ``__all__`` without defining them: imported
    names, and aliases (``X = other_module.Y`` or ``X = imported_name``)."""
    result = {}
    for name, path in modules(package_dir).items():
        if path.name == "__init__.py":
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        listed: list[str] = []
        own: set[str] = set()
        imported: set[str] = set()
        for node in tree.body:
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                imported.update((a.asname or a.name).split(".")[0] for a in node.names)
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                own.add(node.name)
            elif isinstance(node, (ast.Assign, ast.AnnAssign)) and node.value is not None:
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                values = node.value.elts if isinstance(node.value, ast.Tuple) else None
                for target in targets:
                    if isinstance(target, ast.Name) and target.id == "__all__":
                        listed = [e.value for e in node.value.elts if isinstance(e, ast.Constant)]  # type: ignore[attr-defined]
                        continue
                    paired = values is not None and isinstance(target, ast.Tuple) and len(target.elts) == len(values)
                    pairs = zip(target.elts, values, strict=True) if paired else [(target, node.value)]
                    for sub, value in pairs:
                        alias = _root(value) in imported
                        own.update(n for n in _assigned(sub) if not alias)
        foreign = [n for n in listed if n not in own]
        if foreign:
            result[name] = foreign
    return result


def _docstrings(tree: ast.AST) -> set[int]:
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                found.add(id(first.value))
    return found


def spelled_names(package_dir: Path, fragments: list[str], *, skip: set[str]) -> list[str]:
    """``file:line: 'text'`` for each string (an f-string's literal parts too; not docstrings, not prose with
    spaces) that spells one of ``fragments`` (a file name, or a name's fixed part) outside the files ``skip``
    (paths relative to the package's parent)."""
    pattern = re.compile("|".join(rf"(?<![\w]){re.escape(f)}" for f in sorted(fragments, key=len, reverse=True)))
    found = []
    for path in sorted(package_dir.rglob("*.py")):
        rel = path.relative_to(package_dir.parent).as_posix()
        if rel in skip:
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        docs = _docstrings(tree)
        for node in ast.walk(tree):
            if (isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docs
                    and not re.search(r"\s", node.value) and pattern.search(node.value)):
                found.append(f"{rel}:{node.lineno}: {node.value!r}")
    return found

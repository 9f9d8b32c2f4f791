"""Code versions: which files decide a stage's results, found by walking
imports, and their content hash.

The workflow reruns a stage when its code version changes: each stage that
follows code edits carries ``code_version`` of its step script and the
package modules it runs as a Snakemake param (``rules/common.smk``). Only
content counts, never a file's modification time, so moving or checking out
code that is byte-for-byte the same reruns nothing.
"""

from __future__ import annotations

import ast
import hashlib
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parents[1]


def _module_file(dotted: str) -> Path | None:
    """The file of package module ``dotted`` (relative to ``ldsbench``), or None."""
    path = PACKAGE_DIR.joinpath(*dotted.split("."))
    for candidate in (path.with_suffix(".py"), path / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def module_closure(*modules: str) -> list[str]:
    """Files (relative to the package) of the package modules ``modules``
    (dotted, relative to ``ldsbench``: "methods.trak") and of every package
    module they import, relative or absolute (``ldsbench.``), also inside
    functions, transitively. A package's ``__init__`` counts only when
    imported from itself: importing ``ldsbench.methods.trak`` does not hash
    ``methods/__init__.py``."""
    seen, todo = set(), list(modules)
    while todo:
        name = todo.pop()
        path = _module_file(name)
        if name in seen or path is None:
            continue
        seen.add(name)
        package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.ImportFrom):
                if isinstance(node, ast.Import):
                    todo.extend(a.name.removeprefix("ldsbench.") for a in node.names if a.name.startswith("ldsbench."))
                continue
            if node.level == 0:
                if node.module and node.module.startswith("ldsbench."):
                    base = node.module.removeprefix("ldsbench.").split(".")
                else:
                    continue
            else:
                base = package[: len(package) - (node.level - 1)] + (node.module.split(".") if node.module else [])
            if node.module is None or _module_file(".".join(base)) is None:
                # `from . import x`: x may be a module.
                todo.extend(".".join([*base, alias.name]) for alias in node.names)
            if base:
                todo.append(".".join(base))
    return sorted(str(_module_file(name).relative_to(PACKAGE_DIR)) for name in seen)


def content_hash(files) -> str:
    """16 hex digits of the SHA-256 of the files' bytes, in the given order."""
    digest = hashlib.sha256()
    for path in files:
        digest.update(Path(path).read_bytes())
    return digest.hexdigest()[:16]


def _local_module_file(folder: Path, dotted: str) -> Path | None:
    """The file of module ``dotted`` if it lives under ``folder``, or None."""
    path = folder.joinpath(*dotted.split("."))
    for candidate in (path.with_suffix(".py"), path / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def local_import_closure(path) -> list[Path]:
    """A user's module file and every module of its own folder it imports
    (``import helpers``, ``from helpers.maths import f``, relative imports
    inside a local package), also inside functions, transitively: the files
    whose content decides an external method's scores. Imports that do not
    resolve to a file under the module's folder (the standard library,
    installed packages, ``ldsbench``) are not followed: the package's own
    code is versioned by ``module_closure``."""
    start = Path(path).resolve()
    folder = start.parent
    seen: list[Path] = []
    todo = [start]
    while todo:
        current = todo.pop()
        if current in seen:
            continue
        seen.append(current)
        # The dotted package of ``current`` relative to the folder, for relative imports.
        package = list(current.relative_to(folder).parent.parts)
        for node in ast.walk(ast.parse(current.read_text(), filename=str(current))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package[: len(package) - (node.level - 1)] + (node.module.split(".") if node.module else [])
                else:
                    base = node.module.split(".")
                names = [".".join(base)] + [".".join([*base, alias.name]) for alias in node.names]
            else:
                continue
            for name in names:
                # Each prefix of a dotted name is imported too (its __init__).
                parts = name.split(".")
                for end in range(1, len(parts) + 1):
                    found = _local_module_file(folder, ".".join(parts[:end])) if all(parts[:end]) else None
                    if found is not None and found not in seen:
                        todo.append(found)
    return sorted(seen, key=lambda p: (p != start, str(p)))

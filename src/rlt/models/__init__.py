"""The code that travels with an RLT checkpoint.

Every module in this folder is copied flat beside ``config.json`` when a model or processor is saved
(``save_pretrained`` copies a class's file and the files it imports), so that
``from_pretrained(folder, trust_remote_code=True)`` works where ``rlt`` is not installed. Hence the
rule the tests enforce: these files import only torch, transformers, numpy, the standard library and
each other, the latter with single-dot relative imports (``from .packing import ...``), the only kind
transformers follows. This ``__init__`` itself never travels: it only lists the files.
"""

from __future__ import annotations

import ast
from pathlib import Path

__all__ = ["CHECKPOINT_FILES", "FOLDER", "code_closure", "relative_imports"]

FOLDER = Path(__file__).resolve().parent
CHECKPOINT_FILES = tuple(sorted(path.name for path in FOLDER.glob("*.py") if path.name != "__init__.py"))


def relative_imports(source: str) -> list[str]:
    """The modules a code file imports with single-dot relative imports: ``from .packing import x`` -> ``packing``."""
    return [
        node.module
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.ImportFrom) and node.level == 1 and node.module
    ]


def code_closure(names, folder: Path = FOLDER) -> tuple[set[str], set[str]]:
    """The code files ``names`` (e.g. ``"modeling_rlt.py"``) of ``folder`` and every file their single-dot
    relative imports reach, as ``(present, missing)``: what ``save_pretrained`` copies and
    ``trust_remote_code`` loads."""
    todo, present, missing = list(names), set(), set()
    while todo:
        name = todo.pop()
        if name in present or name in missing:
            continue
        if not (folder / name).is_file():
            missing.add(name)
            continue
        present.add(name)
        todo += [f"{module}.py" for module in relative_imports((folder / name).read_text(encoding="utf-8"))]
    return present, missing

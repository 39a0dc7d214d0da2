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

__all__ = ["CHECKPOINT_FILES", "FOLDER", "relative_imports"]

FOLDER = Path(__file__).resolve().parent
CHECKPOINT_FILES = tuple(sorted(path.name for path in FOLDER.glob("*.py") if path.name != "__init__.py"))


def relative_imports(source: str) -> list[str]:
    """The modules a code file imports with single-dot relative imports: ``from .packing import x`` -> ``packing``."""
    return [
        node.module
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.ImportFrom) and node.level == 1 and node.module
    ]

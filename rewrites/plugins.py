"""Plugins: a Python file of the user's that registers passes (and rules) with the same API the
built-in passes use; `slimgraph compile --plugin my_passes.py` loads it before the pipeline is
parsed."""
from __future__ import annotations

import hashlib
import importlib.util
import sys
from pathlib import Path

from .base import PassError


def load_plugin(path: str | Path):
    """Import the file at `path` once; its @register_pass classes join the registry."""
    path = Path(path)
    if not path.is_file():
        raise PassError(f"plugin '{path}' does not exist")
    module_name = "slimgraph_plugin_" + hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:12]
    if module_name in sys.modules:
        return sys.modules[module_name]
    spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:  # noqa: BLE001 - any error in user code is reported in one line
        del sys.modules[module_name]
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise PassError(f"plugin '{path}' failed to import: {type(exc).__name__}: {first}") from exc
    return module

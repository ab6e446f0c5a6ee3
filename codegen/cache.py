"""Where codegen keeps what it builds or measures once per machine: $XDG_CACHE_HOME/slimgraph/NAME,
else ~/.cache/slimgraph/NAME (the aarch64 runtime, the CUDA stand-in driver, channel-width tables,
the tuning database)."""
from __future__ import annotations

import os
from pathlib import Path


def cache_dir(name: str) -> Path:
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "slimgraph" / name

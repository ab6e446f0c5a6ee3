"""Package a built executable as one shared library plus a metadata JSON beside it.

Writes go to a temporary folder next to the output and are renamed into place at the end, so
a failure leaves nothing half-written at the output path.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

from slimgraph.ir.errors import SlimgraphError

METADATA_FORMAT = 1


class ArtifactError(SlimgraphError):
    """The output path cannot be written, or an artifact on disk is broken."""


def artifact_paths(output: str | os.PathLike) -> tuple[Path, Path]:
    """`out/model.so` -> (out/model.so, out/model.json); a path without `.so` gets it appended."""
    output = Path(output)
    library = output if output.suffix == ".so" else output.with_name(output.name + ".so")
    return library, library.with_suffix(".json")


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def check_writable(output: str | os.PathLike) -> None:
    library, _ = artifact_paths(output)
    folder = library.parent
    if not folder.is_dir():
        raise ArtifactError(f"cannot write output '{library}': folder '{folder}' does not exist")
    if not os.access(folder, os.W_OK):
        raise ArtifactError(f"cannot write output '{library}': folder '{folder}' is not writable")
    if library.is_dir():
        raise ArtifactError(f"cannot write output '{library}': it is a folder")


def write_artifact(executable, metadata: dict, output: str | os.PathLike, verify=None,
                   **export_options) -> tuple[Path, Path]:
    """Export `executable` and its metadata atomically; returns (library path, metadata path).
    `verify(staged library)` may raise to refuse the library before anything reaches `output`."""
    check_writable(output)
    library, meta = artifact_paths(output)
    staging = Path(tempfile.mkdtemp(prefix=f".{library.name}.", dir=library.parent))
    try:
        staged_library = staging / library.name
        executable.export_library(str(staged_library), **export_options)
        if verify is not None:
            verify(staged_library)
        metadata = {**metadata, "format": METADATA_FORMAT,
                    "library": {"file": library.name, "bytes": staged_library.stat().st_size,
                                "sha256": sha256_of(staged_library)}}
        staged_meta = staging / meta.name
        staged_meta.write_text(json.dumps(metadata, indent=2) + "\n")
        os.replace(staged_library, library)
        os.replace(staged_meta, meta)
    except OSError as exc:
        raise ArtifactError(f"cannot write output '{library}': {exc.strerror or exc}") from exc
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return library, meta


def read_metadata(library: Path) -> dict:
    """Read and check the metadata JSON beside a library (existence, format, checksum)."""
    library, meta = artifact_paths(library)
    if not library.is_file():
        raise ArtifactError(f"no compiled library at '{library}'")
    if not meta.is_file():
        raise ArtifactError(f"'{library}' has no metadata file '{meta.name}' beside it")
    try:
        metadata = json.loads(meta.read_text())
    except json.JSONDecodeError as exc:
        raise ArtifactError(f"metadata '{meta}' is not valid JSON: {exc.msg} at line {exc.lineno}") from exc
    expected = metadata.get("library", {}).get("sha256")
    if expected != sha256_of(library):
        raise ArtifactError(f"'{library}' does not match the checksum in '{meta.name}' (modified or truncated)")
    return metadata

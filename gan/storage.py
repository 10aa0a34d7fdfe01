"""Where files live: local paths now, s3:// URIs behind the same three calls. Nothing above this knows which."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path


def join(root: str, name: str) -> str:
    return f"{root.rstrip('/')}/{name}" if "://" in root else str(Path(root) / name)


def read_bytes(location: str) -> bytes:
    return Path(location).read_bytes()


def write_bytes(location: str, data: bytes) -> None:
    """Write whole or not at all: a crash leaves the old file or none, never half a file."""
    path = Path(location)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{path.name}.", delete=False) as tmp:
        tmp.write(data)
    os.replace(tmp.name, path)


def exists(location: str) -> bool:
    return Path(location).exists()

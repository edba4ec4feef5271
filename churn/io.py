"""Atomic writes, input hashing and the machine-readable ``summary.json``.

Every file the system writes goes to a temporary name in the destination folder and is then
renamed, so a crash or a validation error never leaves a half-written output behind.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

_UMASK = os.umask(0)
os.umask(_UMASK)

@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, 0o666 & ~_UMASK)  # mkstemp creates 0600; outputs should be readable like any file
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_atomic(path: str | Path, writer: Callable[[Path], None]) -> Path:
    """Call ``writer(tmp_path)`` and move the result onto ``path`` atomically."""
    with atomic_path(path) as tmp:
        writer(tmp)
    return Path(path)


def write_text(path: str | Path, text: str) -> Path:
    return write_atomic(path, lambda p: p.write_text(text, encoding="utf-8"))


def write_json(path: str | Path, obj: Any) -> Path:
    return write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n")


def write_parquet(path: str | Path, df: pd.DataFrame) -> Path:
    """Write Parquet deterministically (no pandas index metadata that varies between runs)."""
    return write_atomic(path, lambda p: df.to_parquet(p, index=False, engine="pyarrow"))


def write_csv(path: str | Path, df: pd.DataFrame) -> Path:
    return write_atomic(path, lambda p: df.to_csv(p, index=False, lineterminator="\n"))


def write_jsonl(path: str | Path, records: Iterable[dict[str, Any]]) -> Path:
    def _write(p: Path) -> None:
        with p.open("w", encoding="utf-8") as fh:
            for rec in records:
                fh.write(json.dumps(rec, ensure_ascii=False, sort_keys=True, default=_json_default))
                fh.write("\n")

    return write_atomic(path, _write)


def hash_files(paths: Iterable[str | Path], chunk: int = 1 << 20) -> str:
    """SHA-256 over the names and bytes of ``paths`` (sorted by name), as ``sha256:<hex>``.

    A folder (a Parquet dataset) contributes each of its visible files, in path order.
    """
    h = hashlib.sha256()
    files: list[Path] = []
    for x in sorted(Path(x) for x in paths):
        files += sorted(f for f in x.rglob("*") if f.is_file() and not f.name.startswith((".", "_"))) if x.is_dir() else [x]
    for p in files:
        h.update(p.name.encode())
        h.update(b"\0")
        with p.open("rb") as fh:
            while block := fh.read(chunk):
                h.update(block)
    return "sha256:" + h.hexdigest()


def hash_frame(df: pd.DataFrame) -> str:
    """Stable content hash of a DataFrame (values and column names)."""
    h = hashlib.sha256()
    h.update(",".join(map(str, df.columns)).encode())
    h.update(pd.util.hash_pandas_object(df, index=False).to_numpy().tobytes())
    return "sha256:" + h.hexdigest()


def _json_default(o: Any) -> Any:
    if isinstance(o, (pd.Timestamp,)):
        return o.isoformat()
    if isinstance(o, Path):
        return str(o)
    if hasattr(o, "item"):  # numpy scalars
        return o.item()
    if hasattr(o, "isoformat"):
        return o.isoformat()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def stable_uniform(keys: list[object], salt: str) -> np.ndarray:
    """A deterministic uniform draw in [0, 1) per key: first 8 bytes of sha256("salt:key") / 2**64.

    Seeded by the text alone (no RNG state), so the same key gets the same draw in every run and engine:
    control groups (campaign and playbook as salt) and customer folds (a seed as salt) use it.
    """
    digests = b"".join(hashlib.sha256(f"{salt}:{k}".encode()).digest()[:8] for k in keys)
    raw = np.frombuffer(digests, dtype=">u8").astype(np.float64) / 2.0**64
    # Rounding to float64 can carry the largest hashes up to exactly 1.0; keep the draw in [0, 1).
    return np.minimum(raw, np.nextafter(1.0, 0.0))

"""A size-capped cache of validated, sorted tables: Arrow IPC files plus a JSON manifest, nothing executable.

One entry is a folder ``<folder>/<key>/`` holding ``manifest.json`` (row counts, file sizes, small metadata)
and one ``<name>.arrow`` file per table. An entry is written into a staging folder beside it and renamed
into place in one step, so a reader never sees half an entry; an entry that does not read back exactly as
its manifest says (truncated, overwritten, unreadable) is removed and reported, and the caller loads afresh.
Reading an entry refreshes its manifest's modification time; above the size cap the entries least recently
used are evicted first. The key (see :func:`entry_key`) is built by the caller from the input files' hash,
the config and :func:`code_version`, so a changed input, config or loader never hits an old entry.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from churn.publish import STAGING_PREFIX, new_staging

if TYPE_CHECKING:
    import pandas as pd

    from churn.config import TableCacheConfig

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
FORMAT = 1  # bump when the entry layout changes
# the modules whose code decides what the loader returns: a change to any of them is a new code version
_LOADER_MODULES = ("features/contract.py", "features/derive.py", "features/treatments.py", "features/table_cache.py",
                   "churn/config.py", "churn/io.py")
_ROOT = Path(__file__).resolve().parents[1]


def default_folder() -> Path:
    """``$CHURN_CACHE_DIR``, else ``$XDG_CACHE_HOME/churn/tables`` (``~/.cache/churn/tables``)."""
    if os.environ.get("CHURN_CACHE_DIR"):
        return Path(os.environ["CHURN_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "churn" / "tables"


def cache_folder(cfg: TableCacheConfig, enabled: bool | None = None) -> Path | None:
    """The folder to cache in, or None when caching is off (``enabled=False``, the config, ``CHURN_NO_CACHE``)."""
    if enabled is None:
        enabled = cfg.enabled and os.environ.get("CHURN_NO_CACHE", "").lower() not in ("1", "true", "yes")
    if not enabled:
        return None
    return Path(cfg.folder).expanduser() if cfg.folder else default_folder()


@functools.cache
def code_version() -> str:
    """A hash of the loader's source files and of the libraries that decide the tables' dtypes."""
    import numpy as np
    import pandas as pd
    import pyarrow as pa

    h = hashlib.sha256(f"format {FORMAT}; pandas {pd.__version__}; pyarrow {pa.__version__}; "
                       f"numpy {np.__version__}".encode())
    for rel in _LOADER_MODULES:
        h.update(rel.encode() + b"\0" + (_ROOT / rel).read_bytes())
    return h.hexdigest()


def entry_key(*parts: str) -> str:
    """The entry name for ``parts`` (input hash, config fingerprint, ...) and the code version."""
    h = hashlib.sha256(code_version().encode())
    for part in parts:
        h.update(b"\0" + part.encode())
    return h.hexdigest()[:40]


def fetch(folder: Path, key: str) -> tuple[dict[str, pd.DataFrame], dict[str, Any]] | None:
    """The tables and metadata of entry ``key``, or None (absent, or unreadable: removed with a warning)."""
    entry = folder / key
    if not (entry / MANIFEST).is_file():
        return None
    try:
        manifest = json.loads((entry / MANIFEST).read_text(encoding="utf-8"))
        frames = {name: _read_frame(entry, name, spec) for name, spec in manifest["tables"].items()}
        meta = manifest["meta"]
    except Exception as exc:  # noqa: BLE001 - whatever is wrong with an entry, a fresh load replaces it
        log.warning("table cache entry %s is unreadable (%s: %s): removed, loading afresh", entry,
                    type(exc).__name__, exc)
        shutil.rmtree(entry, ignore_errors=True)
        return None
    os.utime(entry / MANIFEST)  # most recently used: evicted last
    return frames, meta


def _read_frame(entry: Path, name: str, spec: dict[str, Any]) -> pd.DataFrame:
    import pyarrow as pa

    path = entry / f"{name}.arrow"
    if path.stat().st_size != spec["bytes"]:
        raise ValueError(f"{path.name} has {path.stat().st_size} bytes, the manifest says {spec['bytes']}")
    with pa.memory_map(str(path)) as source:
        table = pa.ipc.open_file(source).read_all()
    if table.num_rows != spec["rows"] or table.column_names != spec["columns"]:
        raise ValueError(f"{path.name}: {table.num_rows} rows / columns {table.column_names[:8]} differ from the manifest")
    return table.to_pandas()


def store(folder: Path, key: str, frames: dict[str, pd.DataFrame], meta: dict[str, Any], max_mb: float) -> Path | None:
    """Write entry ``key`` atomically, then evict old entries above ``max_mb``; None when it could not be cached."""
    import pyarrow as pa

    if (folder / key / MANIFEST).is_file():
        return folder / key
    try:
        staged = new_staging(folder / key)
    except OSError as exc:
        log.warning("table cache folder %s is not writable (%s): tables not cached", folder, exc)
        return None
    try:
        tables = {}
        for name, df in frames.items():
            table = pa.Table.from_pandas(df, preserve_index=False)
            path = staged / f"{name}.arrow"
            with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
                writer.write_table(table)
            tables[name] = {"rows": table.num_rows, "columns": table.column_names, "bytes": path.stat().st_size}
        (staged / MANIFEST).write_text(json.dumps({"format": FORMAT, "tables": tables, "meta": meta}, indent=1,
                                                  sort_keys=True), encoding="utf-8")
        os.rename(staged, folder / key)  # an entry another process published meanwhile stays (same content)
    except OSError as exc:
        if not (folder / key / MANIFEST).is_file():  # else: another process published the same entry first
            log.warning("tables not cached in %s: %s", folder, exc)
            return None
    finally:
        shutil.rmtree(staged, ignore_errors=True)
    evict(folder, max_mb)
    return folder / key if (folder / key).is_dir() else None


def _entry_bytes(entry: Path) -> int:
    return sum(f.stat().st_size for f in entry.iterdir() if f.is_file())


def evict(folder: Path, max_mb: float) -> list[Path]:
    """Remove the least recently used entries until the cache holds at most ``max_mb``; return the removed ones."""
    entries = []
    for entry in folder.iterdir():
        if entry.is_dir() and not entry.name.startswith(STAGING_PREFIX) and (entry / MANIFEST).is_file():
            entries.append(((entry / MANIFEST).stat().st_mtime, entry.name, entry, _entry_bytes(entry)))
    total, removed = sum(e[3] for e in entries), []
    for _, _, entry, size in sorted(entries):
        if total <= max_mb * 2**20:
            break
        shutil.rmtree(entry, ignore_errors=True)
        total -= size
        removed.append(entry)
    if removed:
        log.info("table cache: evicted %d entr%s above the %g MB cap", len(removed), "y" if len(removed) == 1 else "ies",
                 max_mb)
    return removed

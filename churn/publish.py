"""All-or-nothing publication of an output folder, and one writer per output at a time.

A command that writes a folder (``churn score --out``, ``monitor``, ``demo``) writes every file into a
staging folder *beside* the target (``<parent>/.staging-<name>-<pid>-<token>``), then publishes the
whole set with one atomic ``renameat2(RENAME_EXCHANGE)`` (Linux >= 3.15): the staged folder and the old
``--out`` swap names in a single step, so a reader sees either the old set or the new one, never a mix.
The old folder (now under the staging name) is then deleted. A first run uses a plain ``rename``.

``output_lock`` holds an exclusive ``flock`` for the whole command: a second caller gets :class:`BusyError`
(exit 75, retry later). The kernel drops the lock when its process dies (even on ``kill -9``), so a dead
process never leaves a stale lock. Lock files live in ``$CHURN_LOCK_DIR`` (default ``<tmp>/churn-locks``),
named by a hash of the locked path, so a failed command leaves nothing beside ``--out``; hence the locks
serialise the commands of one machine (not of several hosts sharing a network folder). Under the lock,
leftovers of killed runs (``.staging-<name>-*`` beside ``--out``) are removed.

Fault injection for tests: ``CHURN_FAULT_AT=<point>`` makes the process ``SIGKILL`` itself at that point
(see :func:`fault_point`); unset, it costs one environment lookup.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import fcntl
import hashlib
import logging
import os
import secrets
import shutil
import signal
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from churn.errors import EXIT_TEMPFAIL, ChurnError, UsageError

log = logging.getLogger(__name__)

STAGING_PREFIX = ".staging-"
_RENAME_EXCHANGE = 2
_AT_FDCWD = -100
MARKER = "summary.json"  # a folder holding it is a previous churn output and may be replaced


class BusyError(ChurnError):
    """Another process holds the lock on this output (or training study): try again later."""

    exit_code = EXIT_TEMPFAIL


def fault_point(name: str) -> None:
    """Test-only fault injection: ``SIGKILL`` this process here when ``CHURN_FAULT_AT`` names this point."""
    if os.environ.get("CHURN_FAULT_AT") == name:
        log.warning("CHURN_FAULT_AT=%s: killing this process (test fault injection)", name)
        os.kill(os.getpid(), signal.SIGKILL)


def lock_path(key: str) -> Path:
    """The lock file for ``key`` (an absolute output path, a study name) in the machine's lock folder."""
    folder = Path(os.environ.get("CHURN_LOCK_DIR") or Path(tempfile.gettempdir()) / "churn-locks")
    if not folder.is_dir():
        folder.mkdir(parents=True, exist_ok=True)
        try:
            folder.chmod(0o1777)  # shared by every user, like /tmp
        except PermissionError:
            pass
    stem = "".join(c if c.isalnum() or c in "-_." else "_" for c in Path(key).name)[:60]
    return folder / f"{stem}-{hashlib.sha256(key.encode()).hexdigest()[:16]}.lock"


@contextmanager
def file_lock(key: str, what: str) -> Iterator[None]:
    """Hold an exclusive, non-blocking ``flock`` for ``key``; :class:`BusyError` if another process has it."""
    path = lock_path(key)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
            raise BusyError(f"{what} is in use by another churn process (pid {holder}; lock {path}): "
                            "wait for it to finish, then retry") from exc
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def _check_target(out: Path) -> None:
    """Refuse to replace a file, or a non-empty folder that is not a previous churn output."""
    if out.is_symlink() or (out.exists() and not out.is_dir()):
        raise UsageError(f"--out {out}: exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not (out / MARKER).is_file():
        raise UsageError(f"--out {out}: folder is not empty and holds no {MARKER} (not a churn output): "
                         "it would be replaced as a whole; choose a new or empty folder")


def clean_stale_staging(out: Path) -> list[Path]:
    """Remove ``.staging-<name>-*`` leftovers of killed runs beside ``out`` (call under the output lock)."""
    removed = []
    if out.parent.is_dir():
        for p in sorted(out.parent.glob(f"{STAGING_PREFIX}{out.name}-*")):
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink(missing_ok=True)
            removed.append(p)
    if removed:
        log.warning("removed %d stale staging folder(s) of killed runs: %s", len(removed), [p.name for p in removed])
    return removed


@contextmanager
def output_lock(out: str | Path, folder: bool = True) -> Iterator[Path]:
    """Lock ``out`` for this process (``<parent>/.<name>.lock``), check it can be replaced, clean stale staging.

    ``folder=False``: ``out`` is a file (``churn features --out FILE``), replaced with its companions.
    """
    out = Path(out).absolute()
    if folder:
        _check_target(out)
    elif out.is_dir():
        raise UsageError(f"--out {out}: is a folder; give a file name such as features.parquet")
    with file_lock(str(out), f"output {out}"):
        clean_stale_staging(out)
        yield out


def new_staging(out: str | Path) -> Path:
    """A fresh, empty staging folder beside ``out`` (same file system, so the publish is a rename)."""
    out = Path(out).absolute()
    out.parent.mkdir(parents=True, exist_ok=True)
    st = out.parent / f"{STAGING_PREFIX}{out.name}-{os.getpid()}-{secrets.token_hex(4)}"
    st.mkdir()
    return st


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap the names ``a`` and ``b`` (Linux ``renameat2``); False where the call is not available."""
    libc_name = ctypes.util.find_library("c")
    fn = getattr(ctypes.CDLL(libc_name, use_errno=True), "renameat2", None) if libc_name else None
    if fn is None:
        return False
    if fn(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) != 0:
        err = ctypes.get_errno()
        if err in (errno.ENOSYS, errno.EINVAL):  # kernel or file system without RENAME_EXCHANGE
            return False
        raise OSError(err, os.strerror(err), str(a))
    return True


def publish(staged: Path, out: str | Path) -> Path:
    """Make ``staged`` the new ``out`` in one atomic step; delete the old folder afterwards."""
    out = Path(out).absolute()
    _check_target(out)
    fault_point("publish")
    if not out.exists():
        os.rename(staged, out)
    elif not _exchange(staged, out):
        # fallback (no renameat2): two renames; between them `out` is briefly absent, never mixed
        old = out.parent / f"{STAGING_PREFIX}{out.name}-old-{os.getpid()}"
        os.rename(out, old)
        os.rename(staged, out)
        staged = old
    fault_point("published")
    if staged.exists():
        shutil.rmtree(staged, ignore_errors=True)  # the previous set, now under the staging name
    return out


def publish_files(staged: Path, dest: str | Path, names: list[str]) -> None:
    """Move the staged files ``names`` into ``dest``, one atomic rename each and in order, then drop ``staged``.

    For outputs that share a folder with other files (``churn features``): each file is whole, and with
    ``summary.json`` last a reader that trusts the summary never sees it describe files not yet in place;
    the set is not swapped in one step (a kill between two renames leaves the earlier ones new).
    """
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    fault_point("publish")
    for name in names:
        os.replace(staged / name, dest / name)
    shutil.rmtree(staged, ignore_errors=True)


@contextmanager
def staged_output(out: str | Path) -> Iterator[Path]:
    """Yield a staging folder for ``out``; publish it when the block succeeds, delete it when it fails."""
    st = new_staging(out)
    try:
        yield st
    except BaseException:
        shutil.rmtree(st, ignore_errors=True)
        raise
    publish(st, out)

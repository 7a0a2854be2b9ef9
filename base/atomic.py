"""Crash-safe file replacement shared by key files, the vault, bundles and the device agent's state.

A failed write never leaves a partial file: the temp file is removed and the OSError becomes a
FileWriteError (a KeycamError, still an OSError) naming the path; a full disk says "disk full".
"""
from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from base.errors import KeycamError

_FULL = (errno.ENOSPC, errno.EDQUOT)


class FileWriteError(KeycamError, OSError):
    """A file could not be written (disk full, read-only, no permission); nothing partial was left."""


def write_error(path: str | Path, exc: OSError) -> FileWriteError:
    """The one-line error for a failed write of `path` (keeps the errno)."""
    if isinstance(exc, FileWriteError):
        return exc
    if exc.errno in _FULL:
        return FileWriteError(exc.errno, f"disk full: cannot write {path} ({exc.strerror}); "
                                         "free some space and run the command again")
    return FileWriteError(exc.errno, f"cannot write {path}: {exc.strerror or exc}")


def fsync_dir(path: Path) -> None:
    """Flush a directory entry (a rename inside it) to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_output(path: str | Path, mode: int = 0o600) -> Iterator[BinaryIO]:
    """Write `path` through a file object so that a crash or an error leaves the old content or the new,
    never a mix: temp file with `mode`, fsync, rename, fsync of the directory. On any error the temp
    file is removed, and an OSError is raised as FileWriteError."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        with os.fdopen(fd, "wb") as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except BaseException as exc:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        if isinstance(exc, OSError):
            raise write_error(path, exc) from exc
        raise


def atomic_write(path: str | Path, data: bytes, mode: int = 0o600) -> None:
    """Replace `path` with `data` atomically (see atomic_output)."""
    with atomic_output(path, mode) as fh:
        fh.write(data)

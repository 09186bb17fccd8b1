"""Files written all or nothing, output paths checked before measuring, and sdbench's cache folder.

The one atomic writer (:func:`atomic_write_bytes`) lives here, below every layer that writes a file: results
(:mod:`sdbench.record.io`), plans, the matmul-ceiling cache, tokenizer caches.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

from sdbench.errors import ConfigError

#: Overrides where sdbench keeps its caches (tokenizer files, compile caches, matmul ceilings).
ENV_CACHE_DIR = "SDBENCH_CACHE_DIR"


def cache_root() -> Path:
    """Root of sdbench's on-disk cache: env ``SDBENCH_CACHE_DIR``, else ``~/.cache/sdbench``."""
    env = os.environ.get(ENV_CACHE_DIR)
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "sdbench"


def _fsync_dir(folder: Path) -> None:
    """Make a rename in ``folder`` durable (where the file system supports it)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems cannot sync a folder; the rename itself is still atomic
    finally:
        os.close(fd)


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` all or nothing: a temporary file beside it, fsynced, then renamed over it.

    On a failure (a full disk) the old file is intact and the temporary one removed; the OSError propagates."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            write_all(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    _fsync_dir(path.parent)
    return path


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    """:func:`atomic_write_bytes` of UTF-8 text."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def write_all(fd: int, data: bytes) -> None:
    """``os.write`` until every byte is written; a write that makes no progress is a full disk."""
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        if n <= 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        view = view[n:]


def ensure_writable(path: str | os.PathLike[str], field: str = "output") -> Path:
    """Check before measuring that file ``path`` can be written, so a bad output path is one clear error up front
    instead of lost results at the end. Nothing is created: missing folders are made when the file is written.
    Raises ConfigError naming ``field``."""
    path = Path(path)
    if path.is_dir():
        raise ConfigError(field, str(path), reason="is a folder; give a file name")
    _probe(path.parent, field, str(path))
    return path


def ensure_writable_dir(folder: str | os.PathLike[str], field: str = "output_dir") -> Path:
    """Check before measuring that files can be written in ``folder`` (or in the folders that will be made for
    it). Nothing is created. Raises ConfigError naming ``field``."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise ConfigError(field, str(folder), reason="is a file, not a folder")
    _probe(folder, field, str(folder))
    return folder


def _probe(folder: Path, field: str, shown: str) -> None:
    """Write and remove a probe file in ``folder``, or in the nearest folder above it that exists (the rest of the
    path will be made there): a path under a file, or in a folder that cannot be written, fails here."""
    existing = folder if str(folder) else Path(".")
    while not existing.exists():
        if existing.parent == existing:
            break
        existing = existing.parent
    if not existing.is_dir():
        raise ConfigError(field, shown, reason=f"cannot be written: {existing} is a file, not a folder")
    probe = existing / f".sdbench-probe-{os.getpid()}"
    try:
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.close(fd)
        probe.unlink()
    except OSError as exc:
        raise ConfigError(field, shown, reason=f"cannot be written: {exc.strerror or exc}") from None


def check_output_paths(**paths: str | os.PathLike[str] | None) -> None:
    """:func:`ensure_writable` for each output file given (``field=path``; None is skipped), before measuring."""
    for name, path in paths.items():
        if path is not None and str(path) != "":
            ensure_writable(path, name)

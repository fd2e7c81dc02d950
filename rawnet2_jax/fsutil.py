"""File-system helpers shared by the writers and readers: why a path is unusable, our own
temporary directories (named so that a later writer can tell a dead writer's leftovers from a
live one's), directory replacement, output folders, directory locks, SHA-256 of files, and
one-line messages for OSErrors (full disk, read-only).
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import os
import shutil
import socket
import tempfile
import time
from pathlib import Path

# A temporary sibling of NAME is ".NAME.tmp-HOST-PID-RANDOM" (".NAME.old-..." for a model moved
# aside while its replacement is renamed in). Leftovers of writers killed with -9 are removed by
# the next writer of NAME: on this host when that PID is gone, from other hosts (shared file
# systems) after STALE_FOREIGN_SECONDS, and with the older, PID-less names when they predate
# this process.
TEMP_KINDS = ("tmp", "old")
STALE_FOREIGN_SECONDS = 24 * 3600


def _host() -> str:
    return socket.gethostname().replace("-", "_") or "host"


def temp_prefix(name: str, kind: str = "tmp") -> str:
    return f".{name}.{kind}-{_host()}-{os.getpid()}-"


def make_temp_dir(parent: Path, name: str, kind: str = "tmp") -> Path:
    """A new empty hidden directory next to ``parent / name``, named for :func:`remove_stale_temps`."""
    return Path(tempfile.mkdtemp(prefix=temp_prefix(name, kind), dir=parent))


def replace_dir(src: Path, dst: Path) -> None:
    """Rename the finished directory ``src`` to ``dst``. An existing ``dst`` is moved aside first
    (``.NAME.old-*`` beside it, put back if the second rename fails) and removed last. ``src``
    gets the permissions of a directory made by ``mkdir`` (``mkdtemp`` made it 0700, which
    would keep other users on a shared machine out)."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(src, 0o777 & ~umask)
    dst.parent.mkdir(parents=True, exist_ok=True)
    if not dst.exists():
        os.rename(src, dst)
        return
    if dst.is_dir() and not any(dst.iterdir()):
        dst.rmdir()
        os.rename(src, dst)
        return
    old = make_temp_dir(dst.parent, dst.name, "old")
    old.rmdir()
    os.rename(dst, old)
    try:
        os.rename(src, dst)
    except BaseException:
        os.rename(old, dst)  # put the previous one back
        raise
    shutil.rmtree(old, ignore_errors=True)


def recover_moved_aside(directory: str | os.PathLike, is_complete) -> bool:
    """Put back what a writer killed between :func:`replace_dir`'s two renames left moved aside.

    A kill there leaves no ``NAME``, only ``.NAME.old-*``: if such a leftover of a dead writer
    passes ``is_complete(path)``, it is renamed back (True). Call it before writing ``NAME``.
    """
    d = Path(directory).absolute()
    if os.path.lexists(d):
        return False
    for old in sorted(stale_temps(d.parent, d.name, "old"), key=lambda p: p.stat().st_mtime, reverse=True):
        if is_complete(old):
            try:
                os.rename(old, d)
                return True
            except OSError:
                return False
    return False


def _process_start_time() -> float:
    """Wall-clock start of this process (from /proc; import time of this module elsewhere)."""
    try:
        ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        boot = next(
            float(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines() if line.startswith("btime")
        )
        return boot + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return _IMPORTED_AT


_IMPORTED_AT = time.time()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def _is_stale(entry: Path, suffix: str, now: float) -> bool:
    parts = suffix.split("-")
    try:
        mtime = entry.lstat().st_mtime
    except OSError:
        return False
    if len(parts) >= 3 and parts[1].isdigit():
        host, pid = parts[0], int(parts[1])
        if host == _host():
            return pid != os.getpid() and not _pid_alive(pid)
        return now - mtime > STALE_FOREIGN_SECONDS
    return mtime < _process_start_time() - 1.0  # a PID-less name of an earlier writer


def stale_temps(parent: str | os.PathLike, name: str, kind: str) -> list[Path]:
    """``.NAME.KIND-*`` entries of ``parent`` whose writer is gone (see :func:`remove_stale_temps`)."""
    prefix, now = f".{name}.{kind}-", time.time()
    try:
        entries = sorted(Path(parent).iterdir())
    except OSError:
        return []
    return [e for e in entries if e.name.startswith(prefix) and _is_stale(e, e.name[len(prefix):], now)]


def remove_stale_temps(parent: str | os.PathLike, name: str) -> list[Path]:
    """Remove leftovers (``.NAME.tmp-*``, ``.NAME.old-*``) of writers of ``parent/NAME`` that
    are no longer running; returns what was removed. Never raises."""
    parent = Path(parent)
    removed: list[Path] = []
    now = time.time()
    try:
        entries = list(parent.iterdir())
    except OSError:
        return removed
    for entry in entries:
        for kind in TEMP_KINDS:
            prefix = f".{name}.{kind}-"
            if entry.name.startswith(prefix) and _is_stale(entry, entry.name[len(prefix):], now):
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry, ignore_errors=True)
                else:
                    try:
                        entry.unlink()
                    except OSError:
                        pass
                if not entry.exists():
                    removed.append(entry)
    return removed


def missing_reason(path: str | os.PathLike) -> str:
    """Why ``path`` cannot be opened: 'does not exist', 'is a symlink loop', ..."""
    p = os.fspath(path)
    try:
        os.stat(p)
    except OSError as e:
        if e.errno == errno.ELOOP:
            return "is a symbolic link loop (it points back to itself); fix or remove the link"
        if os.path.islink(p):
            return f"is a broken symbolic link (to {os.readlink(p)!r}, which does not exist)"
        if e.errno == errno.EACCES:
            return "cannot be opened: permission denied"
        if e.errno == errno.ENOTDIR:
            return "does not exist (a part of the path is a file, not a folder)"
        if e.errno == errno.ENOENT:
            return "does not exist"
        return f"cannot be opened ({e.strerror or e})"
    return "exists"


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def make_out_dir(path: str | os.PathLike) -> Path:
    """Create the output folder ``path`` (and its parents); a file in the way, a full disk or
    a read-only location is one line (:class:`rawnet2_jax.errors.UserError`)."""
    from rawnet2_jax.errors import UserError

    out = Path(path)
    if out.exists() and not out.is_dir():
        raise UserError(f"{out} is a file, not a folder; give an output folder (it is created if missing)")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(os_error_line(e, f"creating the output folder {out}")) from None
    return out


def os_error_line(e: OSError, doing: str) -> str:
    """One line for an OSError while ``doing`` (e.g. "writing models/x"), with what to do."""
    where = f" ({e.filename})" if getattr(e, "filename", None) else ""
    if e.errno == errno.ENOSPC or e.errno == errno.EDQUOT:
        return f"{doing} failed: no space left on the device{where}; free space or choose another location"
    if e.errno == errno.EROFS:
        return f"{doing} failed: read-only file system{where}; choose a writable location"
    if e.errno in (errno.EACCES, errno.EPERM):
        return f"{doing} failed: permission denied{where}; choose a location you can write to"
    if e.errno == errno.ENOTDIR:
        return f"{doing} failed: a part of the path is a file, not a folder{where}; choose another location"
    return f"{doing} failed: {e.strerror or e}{where}"


class DirLock:
    """An exclusive ``flock`` on ``directory/filename`` (released by the kernel when the holder
    dies, even by kill -9) holding the holder's PID, host and start time, so that a second
    writer of the same place stops with one line naming the first (:class:`UserError`)."""

    def __init__(self, directory: str | os.PathLike, filename: str, *, subject: str, busy_fix: str,
                 unwritable_fix: str, enabled: bool = True):
        self.path = Path(directory) / filename
        self.subject, self.busy_fix, self.unwritable_fix = subject, busy_fix, unwritable_fix
        self.enabled = enabled
        self._fd: int | None = None

    def __enter__(self) -> "DirLock":
        from rawnet2_jax.errors import UserError

        if not self.enabled:
            return self
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:  # a read-only file system, no permission
            raise self._unwritable(e) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 512, 0).decode("utf-8", "replace").strip() or "another process"
            os.close(fd)
            raise UserError(f"{self.subject} is in use by {holder}; {self.busy_fix}") from None
        started = time.strftime("%Y-%m-%d %H:%M:%S")
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"PID {os.getpid()} on host {socket.gethostname()} (since {started})\n".encode(), 0)
        except OSError as e:  # a full disk
            os.close(fd)
            raise self._unwritable(e) from None
        self._fd = fd
        return self

    def _unwritable(self, e: OSError):
        from rawnet2_jax.errors import UserError

        return UserError(f"{self.subject}: cannot write its lock file {self.path.name} ({e.strerror or e}); "
                         f"{self.unwritable_fix}")

    def __exit__(self, *exc) -> None:
        if self._fd is not None:
            os.ftruncate(self._fd, 0)
            os.close(self._fd)  # closing releases the flock
            self._fd = None

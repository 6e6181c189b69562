"""Writing files and folders so that a kill, a full disk or a crash never leaves them half-written:
temporary siblings named with our pid, fsync, then one rename (or an atomic exchange of folders).
Leftovers of killed writers are cleaned, or restored, on the next write."""

from __future__ import annotations

import contextlib
import ctypes
import errno
import json
import os
import re
import shutil
import stat
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

MAX_JSON = 10 << 20  # bytes: every JSON file a checkpoint holds is far smaller
_TMP = re.compile(r"^\.(?P<name>.+)\.(?P<kind>tmp|old)-(?P<pid>\d+)-[A-Za-z0-9_]{8}(?P<suffix>\.\w+)?$")


def open_regular(path: Path, what: str = "file"):
    """A binary file object for `path`, which must be a regular file (after symlinks): a FIFO, a
    device (/dev/zero, /dev/urandom) or a folder is refused before anything is read, and opening
    never blocks on a FIFO."""
    path = Path(path)
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except FileNotFoundError:
        raise FileNotFoundError(f"{path} not found") from None
    except IsADirectoryError:
        raise ValueError(f"{path} is a folder, not a {what}") from None
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        raise ValueError(f"{path} is not a regular file (a device, pipe or socket): not a {what}")
    if hasattr(os, "set_blocking"):
        os.set_blocking(fd, True)
    return os.fdopen(fd, "rb")


def read_bytes(path: Path, limit: int, what: str = "file") -> bytes:
    """A regular file's bytes, at most `limit` of them: a longer file is refused having read only
    limit + 1 bytes, whatever stat() claims (a file can grow, or lie)."""
    with open_regular(path, what) as f:
        data = f.read(limit + 1)
    if len(data) > limit:
        raise ValueError(f"{path} is over {limit} bytes: too large for a {what}")
    return data


def read_json(path: Path, what: str = "JSON file", limit: int = MAX_JSON):
    """A JSON file read within `limit` bytes; malformed JSON is a ValueError naming the file."""
    data = read_bytes(path, limit, what)
    try:
        return json.loads(data.decode("utf-8-sig"))
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as e:
        raise ValueError(f"{path} is not valid JSON ({type(e).__name__}): not a valid {what}") from None


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError:  # some file systems cannot fsync a directory
        pass
    finally:
        os.close(fd)


class WriteError(OSError):
    """A write that failed (a full disk, an I/O error): its message alone, without "[Errno N]"."""

    def __str__(self) -> str:
        return str(self.strerror)


def _mlx_write_failure(error: BaseException) -> bool:
    """MLX reports a failed write (a full disk among others) as RuntimeError("[write] Unable to ...")."""
    return isinstance(error, RuntimeError) and str(error).startswith("[write]")


def _short_write(error: BaseException) -> bool:
    """numpy's failed write ("64000 requested and 51168 written"): an OSError with no errno."""
    return (
        isinstance(error, OSError)
        and error.errno is None
        and re.search(r"\d+ requested and \d+ written", str(error)) is not None
    )


def _nearly_full(folder: Path) -> bool:
    try:
        stat = os.statvfs(folder)
    except (OSError, AttributeError):
        return False
    return stat.f_bavail * stat.f_frsize < 1 << 20


def disk_full_error(error: BaseException, path: Path) -> BaseException:
    """One clear OSError for a write that failed for want of space: the OS's ENOSPC, or MLX's write
    failure on a device with under 1 MiB left (call it before the partial file is removed). Any
    other error is returned as it was."""
    mlx_failed = _mlx_write_failure(error)
    if (
        (isinstance(error, OSError) and error.errno == errno.ENOSPC)
        or _short_write(error)  # numpy's: the device (or a quota) took only part of the bytes
        or (mlx_failed and _nearly_full(Path(path).parent))
    ):
        return WriteError(
            errno.ENOSPC,
            f"no space left on the device while writing {path}: free some space "
            "or write elsewhere (nothing was replaced)",
        )
    if mlx_failed:
        return WriteError(errno.EIO, f"could not write {path} ({error}); nothing was replaced")
    return error


def clean_stale(path: Path, any_suffix: bool = False) -> None:
    """Removes temporary siblings of `path` left by writers that died; restores a folder that a dead
    writer had moved aside when `path` itself is missing. With any_suffix, siblings of every path
    whose name starts with path's name (e.g. all "checkpoint-*")."""
    path = Path(path)
    parent = path.parent
    if not parent.is_dir():
        return
    for item in parent.iterdir():
        m = _TMP.match(item.name)
        if not m or _alive(int(m["pid"])):
            continue
        if not (m["name"] == path.name or (any_suffix and m["name"].startswith(path.name))):
            continue
        target = parent / m["name"]
        if m["kind"] == "old" and not target.exists():
            os.replace(item, target)  # killed between moving the old one aside and the new one in
        elif item.is_dir() and not item.is_symlink():
            shutil.rmtree(item, ignore_errors=True)
        else:
            item.unlink(missing_ok=True)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def temp_sibling(path: Path, kind: str = "tmp", folder: bool = False) -> Path:
    """A new, empty temporary file or folder beside `path`, named so that clean_stale finds it. A
    folder gets the mode of any new folder (mkdtemp's 0700 would follow it when it is renamed into
    place: other users and containers could not read the model)."""
    path = Path(path)
    prefix = f".{path.name}.{kind}-{os.getpid()}-"
    if folder:
        made = Path(tempfile.mkdtemp(dir=path.parent, prefix=prefix))
        os.chmod(made, 0o777 & ~_umask())
        return made
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=prefix, suffix=path.suffix)
    os.close(fd)
    return Path(tmp)


def atomic_write(path: Path, write: Callable[[Path], object]) -> None:
    """Calls write(tmp) then renames tmp onto path (after fsync): path is never half-written, and on
    any error (a full disk included) the temporary file is removed and path is left as it was."""
    path = Path(path)
    if not path.parent.is_dir():
        raise FileNotFoundError(f"cannot write {path}: the folder {path.parent} does not exist")
    clean_stale(path)
    tmp = temp_sibling(path)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600 files; give the usual permissions
        fsync_path(tmp)
        os.replace(tmp, path)
        fsync_path(path.parent)
    except (OSError, RuntimeError) as e:
        error = disk_full_error(e, path)
        tmp.unlink(missing_ok=True)
        if error is e:
            raise
        raise error from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swaps two paths where the OS can (Linux renameat2, macOS renamex_np)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if sys.platform.startswith("linux") and hasattr(libc, "renameat2"):
            at_fdcwd, rename_exchange = -100, 2
            return libc.renameat2(at_fdcwd, bytes(a), at_fdcwd, bytes(b), rename_exchange) == 0
        if sys.platform == "darwin" and hasattr(libc, "renamex_np"):
            return libc.renamex_np(bytes(a), bytes(b), 0x2) == 0  # RENAME_SWAP
    except (OSError, AttributeError):
        pass
    return False


def publish_folder(tmp: Path, dest: Path) -> None:
    """Moves the finished folder `tmp` onto `dest`, replacing what was there as one atomic step where
    the OS allows (else two renames, undone by clean_stale if a kill falls between them)."""
    tmp, dest = Path(tmp), Path(dest)
    for item in tmp.rglob("*"):
        if item.is_file():
            fsync_path(item)
    fsync_path(tmp)
    if not dest.exists():
        os.replace(tmp, dest)
    elif _exchange(tmp, dest):
        shutil.rmtree(tmp, ignore_errors=True)  # tmp now holds the old contents
    else:
        old = temp_sibling(dest, "old", folder=True)
        os.rmdir(old)
        os.replace(dest, old)
        os.replace(tmp, dest)
        shutil.rmtree(old, ignore_errors=True)
    fsync_path(dest.parent)


@contextlib.contextmanager
def staged_folder(dest: Path):
    """`with staged_folder(dest) as tmp:` fill tmp; on success it replaces dest (publish_folder), on
    any error it is removed and dest is untouched."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    clean_stale(dest)
    tmp = temp_sibling(dest, folder=True)
    try:
        yield tmp
        publish_folder(tmp, dest)
    except (OSError, RuntimeError) as e:
        error = disk_full_error(e, dest)
        shutil.rmtree(tmp, ignore_errors=True)
        if error is e:
            raise
        raise error from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def check_replaceable(out: Path, force: bool) -> None:
    """Refuses an output that exists and is not an empty folder unless `force` (after restoring what
    a writer killed between its two renames had moved aside)."""
    out = Path(out)
    clean_stale(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not force:
        raise FileExistsError(f"{out} exists and is not empty; pass --force to replace it")


def check_disjoint(outputs: dict[str, Path], inputs: dict[str, Path]) -> None:
    """Refuses an output path that equals, contains or lies inside an input (writing it would replace
    or delete the input)."""
    for out_name, out in outputs.items():
        o = Path(out).expanduser().resolve()
        for in_name, src in inputs.items():
            i = Path(src).expanduser().resolve()
            if o == i or o in i.parents or i in o.parents:
                raise ValueError(
                    f"{out_name} {out} {'is' if o == i else 'overlaps'} {in_name} {src}: writing there would "
                    f"replace or delete the input; choose an output folder outside it"
                )


LOCK = ".lock"  # in a folder one run writes into: names the pid holding it


class FolderLock:
    """An exclusive lock on a folder for one run: the file `.lock` in it, held with flock (so the
    kernel frees it when its process dies, however it dies) and holding that process's pid."""

    def __init__(self, folder: Path):
        self.path = Path(folder) / LOCK
        self._fd: int | None = None

    def acquire(self) -> int | None:
        """Takes the lock: None, or (not taken) the pid of the live process holding it (0 unknown)."""
        try:
            import fcntl
        except ImportError:  # no flock (Windows): runs are not guarded against each other
            return None
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o666)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _pid_in(fd)
                os.close(fd)
                return holder
            try:  # a holder releasing meanwhile unlinks the file we opened: lock the new one
                if os.stat(self.path).st_ino == os.fstat(fd).st_ino:
                    break
            except FileNotFoundError:
                pass
            os.close(fd)
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        return None

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            if os.stat(self.path).st_ino == os.fstat(self._fd).st_ino:
                self.path.unlink()
        except FileNotFoundError:
            pass
        finally:
            os.close(self._fd)  # closing frees the flock
            self._fd = None


def lock_holder(folder: Path) -> int | None:
    """The pid of a live process holding `folder`'s lock (0: unknown), else None (a lock file a
    killed run left is free). A shared probe: probes never block each other (ranks probe at once)."""
    try:
        import fcntl

        fd = os.open(Path(folder) / LOCK, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except (ImportError, OSError):
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return None
    except BlockingIOError:
        return _pid_in(fd)
    finally:
        os.close(fd)


def in_use(folder: Path, holder: int) -> str:
    who = f"pid {holder}" if holder else "a process"
    return f"{folder} is in use by another run ({who}): wait for it to end, or choose another folder"


def _pid_in(fd: int) -> int:
    text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    return int(text) if text.isdigit() else 0

"""Writing files so that nothing partial is ever visible: temp names in the destination's
folder, fsync, rename; and removing read-only trees (store objects are made read-only)."""
from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path
from typing import Callable


def unique(digits: int = 8) -> str:
    """Random hex digits for a temp name (os.urandom: importing uuid costs a no-op build ~2 ms)."""
    return os.urandom((digits + 1) // 2).hex()[:digits]


def sweep_leftovers(dest: Path) -> None:
    """Remove temp copies of dest left by a writer that was killed (SIGKILL skips `finally`).
    Only one task ever writes a given target, so any such leftover is dead."""
    prefixes = (f".mm-{dest.name}.", f".mm-old-{dest.name}.")
    try:
        names = os.listdir(dest.parent)  # not Path.glob: it compiles a pattern per call, on every restore
    except FileNotFoundError:
        return
    for name in names:
        if name.startswith(prefixes):
            leftover = dest.parent / name
            rmtree(leftover) if leftover.is_dir() and not leftover.is_symlink() else leftover.unlink(missing_ok=True)


def atomic_file(dest: Path, write: Callable[[Path], None]) -> None:
    """Write through a temp name in dest's folder, then rename: dest is whole or untouched."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    sweep_leftovers(dest)
    tmp = dest.parent / f".mm-{dest.name}.{unique()}"
    try:
        write(tmp)
        os.replace(tmp, dest)
    finally:
        if tmp.exists():
            tmp.unlink()


FICLONE = 0x40049409   # linux/fs.h: _IOW(0x94, 9, int)


def copy_writable(src, dst) -> str:
    """A writable copy of a (read-only) store file: a copy-on-write clone where the file system
    makes one (XFS with reflink, Btrfs: no bytes are copied, and an edit of either file never
    reaches the other), else a byte copy. The object's mtime is kept, so a restored file looks
    unchanged to the stat cache. Returns "clone" or "copy". (A hard link would be cheaper still, but
    an edit in place would then change the store's object.)"""
    how = "clone" if _clone(src, dst) else "copy"
    if how == "copy":
        shutil.copyfile(src, dst)
    shutil.copystat(src, dst)
    os.chmod(dst, 0o644)
    return how


def _clone(src, dst) -> bool:
    try:
        import fcntl
    except ImportError:   # not a POSIX system
        return False
    with open(src, "rb") as s, open(dst, "wb") as d:
        try:
            fcntl.ioctl(d.fileno(), FICLONE, s.fileno())
        except OSError:   # EOPNOTSUPP/EINVAL (ext4, tmpfs), EXDEV (another file system)
            return False
    return True


def write_durably(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: Path) -> None:
    try:
        fsync(path)
    except OSError:
        pass  # some filesystems do not allow fsync on directories


def rmtree(path: Path) -> None:
    def onerror(func, p, exc_info):
        os.chmod(p, stat.S_IWRITE | stat.S_IREAD | stat.S_IEXEC)
        func(p)
    for root, dirs, _ in os.walk(path):
        for d in dirs:
            try:
                os.chmod(os.path.join(root, d), 0o755)
            except OSError:
                pass
    shutil.rmtree(path, onerror=onerror)

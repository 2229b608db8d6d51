"""The simulated board's filesystem, from the PC: the littlefs2 in its flash, as MicroPython's
esp32 port makes and mounts it (modules/flashbdev.py, _boot.py, inisetup.py; extmod/vfs_lfs.c),
read and written with littlefs-python straight in the flash file (the board is off, or between
two commands of its REPL).

- fs_region(flash): (address, size) of the filesystem partition: the "vfs" (or "ffat") row,
  else, as MicroPython v1.26+ registers it at boot, the table's end to the physical end of flash;
- read_files(flash): {path: (bytes, mtime_ns)} of every file ("/boot.py", "/lib/x.py", ...);
  mtime_ns is VfsLfs2's attribute (type 1, 8 bytes little-endian, ns since 1970) or None;
- write_files(flash, files): make the filesystem hold exactly `files` (only what differs is
  written; directories follow the files); the region is formatted first when it is blank;
- mirror_in(flash, dir) / mirror_out(flash, dir): a host directory into the flash's filesystem
  and back (`mpota sim run/serial --fs DIR`).
"""

from __future__ import annotations

import os
from pathlib import Path

from espsim import parttable

BLOCK = 4096  # flashbdev: the partition's native 4 KB blocks
# VfsLfs2.mkfs()/VfsLfs2() defaults in extmod/vfs_lfs.c and vfs_lfsx.c (the port passes none)
GEOMETRY = dict(
    block_size=BLOCK,
    read_size=32,
    prog_size=32,
    lookahead_size=32,
    cache_size=128,  # MIN(block_size, 4 * MAX(read_size, prog_size))
    block_cycles=100,
)
ATTR_MTIME = 1  # LFS_ATTR_MTIME: 64-bit little endian, nanoseconds since 1970/1/1


class NoFilesystem(Exception):
    """The flash has no filesystem partition, or its region holds no littlefs."""


def fs_region(flash: str | Path) -> tuple[int, int]:
    """(address, size) of the board's filesystem partition in the flash file `flash`: the
    partition flashbdev finds on the board (espsim.device: v1.26's registered one included)."""
    from espsim import device

    try:
        dev = device.Device(str(flash))
    except ValueError as e:
        raise NoFilesystem(f"{flash}: no valid partition table ({e})") from None
    try:
        p = dev.find_first(parttable.TYPE_DATA, label="vfs") or dev.find_first(
            parttable.TYPE_DATA, label="ffat"
        )
    finally:
        dev.close()
    if p is None:
        raise NoFilesystem(f"{flash}: no filesystem partition (and no room after the table)")
    if p.label == "ffat":
        raise NoFilesystem(f"{flash}: the filesystem partition is 'ffat' (FAT), not littlefs")
    return p.address, p.size // BLOCK * BLOCK


class _Region:
    # littlefs-python's block device: the region of the flash file, read and written in place.
    def __init__(self, fd: int, address: int, size: int):
        self.fd, self.address, self.size = fd, address, size

    def read(self, cfg, block, off, size):
        return os.pread(self.fd, size, self.address + block * BLOCK + off)

    def prog(self, cfg, block, off, data):
        os.pwrite(self.fd, bytes(data), self.address + block * BLOCK + off)
        return 0

    def erase(self, cfg, block):
        os.pwrite(self.fd, b"\xff" * BLOCK, self.address + block * BLOCK)
        return 0

    def sync(self, cfg):
        return 0


def state(flash: str | Path) -> str:
    """ "littlefs", "blank" (block 0 erased: the port formats it at first boot) or "corrupted"
    (anything else: the port's fs_corrupted()), as _boot.py and inisetup.py tell them apart."""
    address, _ = fs_region(flash)
    with open(flash, "rb") as f:
        f.seek(address)
        head = f.read(2 * BLOCK)
    # mp_vfs_autodetect(): the littlefs2 magic at offset 8 of block 0 or 1
    if head[8:16] == b"littlefs" or head[BLOCK + 8 : BLOCK + 16] == b"littlefs":
        return "littlefs"
    return "blank" if head[:BLOCK] == b"\xff" * BLOCK else "corrupted"


class Board:
    """The littlefs of the flash file `flash`, mounted (format=True: a blank region is
    formatted first, as the port's first boot does). Use as a context manager."""

    def __init__(self, flash: str | Path, write: bool = False, format: bool = False):
        import littlefs

        self.address, self.size = fs_region(flash)
        st = state(flash)
        if st == "corrupted" or (st == "blank" and not format):
            raise NoFilesystem(f"{flash}: the filesystem region at 0x{self.address:x} is {st}")
        self.fd = os.open(flash, os.O_RDWR if write or format else os.O_RDONLY)
        try:
            ctx = _Region(self.fd, self.address, self.size)
            # mount=False: littlefs-python formats what it cannot mount otherwise
            self.fs = littlefs.LittleFS(
                ctx, mount=False, block_count=self.size // BLOCK, **GEOMETRY
            )
            if st == "blank":
                self.fs.format()
            self.fs.mount()
        except Exception as e:
            os.close(self.fd)
            if isinstance(e, littlefs.LittleFSError):
                raise NoFilesystem(f"{flash}: littlefs does not mount ({e})") from None
            raise

    def __enter__(self) -> Board:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self.fd >= 0:
            try:
                self.fs.unmount()
            finally:
                os.close(self.fd)
                self.fd = -1

    def walk(self) -> tuple[list[str], list[str]]:
        """(directories, files): absolute paths, sorted."""
        dirs, files = [], []
        for top, ds, fs in self.fs.walk("/"):
            top = "/" + top.strip("/")
            base = top if top != "/" else ""
            dirs += [f"{base}/{d}" for d in ds]
            files += [f"{base}/{f}" for f in fs]
        return sorted(dirs), sorted(files)

    def mtime(self, path: str) -> int | None:
        try:
            raw = self.fs.getattr(path, ATTR_MTIME)
        except Exception:  # noqa: BLE001 - no attribute
            return None
        return int.from_bytes(raw, "little") if len(raw) == 8 else None

    def read(self, path: str) -> tuple[bytes, int | None]:
        with self.fs.open(path, "rb") as f:
            data = f.read()
        return data, self.mtime(path)

    def write(self, path: str, data: bytes, mtime_ns: int | None = None) -> None:
        parent = path.rsplit("/", 1)[0]
        if parent:
            self.fs.makedirs(parent, exist_ok=True)
        try:
            # the old file goes first: littlefs keeps its blocks until the new one is closed,
            # so rewritten in place a file needs room for both
            self.fs.remove(path)
        except Exception:  # noqa: BLE001 - there was none
            pass
        with self.fs.open(path, "wb") as f:
            f.write(data)
        if mtime_ns is not None:
            self.fs.setattr(path, ATTR_MTIME, int(mtime_ns).to_bytes(8, "little"))

    def remove(self, path: str) -> None:
        self.fs.remove(path)


def read_files(flash: str | Path) -> dict[str, tuple[bytes, int | None]]:
    """Every file of the board's filesystem: {"/path": (bytes, mtime_ns or None)}."""
    with Board(flash) as b:
        return {p: b.read(p) for p in b.walk()[1]}


def write_files(
    flash: str | Path, files: dict[str, tuple[bytes, int | None]], dirs: list[str] = ()
) -> int:
    """Make the board's filesystem hold exactly `files` ({"/path": (bytes, mtime_ns)}) and the
    directories `dirs` (besides those of the files), formatting a blank region first. Only
    what differs is written (a file whose bytes are the same keeps its mtime). Returns the
    number of files written or removed."""
    n = 0
    with Board(flash, write=True, format=True) as b:
        have_dirs, have = b.walk()
        for p in have:
            if p not in files:
                b.remove(p)
                n += 1
        for p, (data, mtime) in sorted(files.items()):
            if p in have and b.read(p)[0] == data:
                continue
            b.write(p, data, mtime)
            n += 1
        keep = set(dirs)
        for p in files:
            while "/" in p.strip("/"):
                p = p.rsplit("/", 1)[0]
                keep.add(p)
        for d in sorted(dirs):
            b.fs.makedirs(d, exist_ok=True)
        for d in sorted(have_dirs, reverse=True):
            if d not in keep:
                b.fs.rmdir(d)
    return n


def _host_tree(root: Path) -> tuple[list[str], dict[str, Path]]:
    dirs, files = [], {}
    for top, ds, fs in os.walk(root):
        rel = "/" + Path(top).relative_to(root).as_posix().strip(".").strip("/")
        base = rel if rel != "/" else ""
        dirs += [f"{base}/{d}" for d in ds]
        for f in fs:
            files[f"{base}/{f}"] = Path(top) / f
    return dirs, files


def snapshot(fs_dir: str | Path) -> dict[str, tuple[int, int]]:
    """{"/path": (size, mtime_ns)} of the files of the directory `fs_dir`."""
    root = Path(fs_dir)
    out = {}
    for p, f in _host_tree(root)[1].items():
        st = f.stat()
        out[p] = (st.st_size, st.st_mtime_ns)
    return out


def mirror_in(
    flash: str | Path, fs_dir: str | Path, since: dict | None = None
) -> dict[str, tuple[int, int]]:
    """Put the directory `fs_dir` into the board's filesystem: its files (bytes, and mtime
    when written) and directories; what the filesystem has beyond them is removed. A blank
    region is formatted first (left blank when fs_dir is empty: the port formats it).
    since (a snapshot() of fs_dir taken when it last matched the board): only the files changed
    or removed on the PC since then are written or removed. Returns fs_dir's snapshot()."""
    root = Path(fs_dir)
    dirs, paths = _host_tree(root)
    snap = snapshot(root)
    if since is not None:
        changed = [p for p in paths if since.get(p) != snap[p]]
        gone = [p for p in since if p not in snap]
        if changed or gone:
            with Board(flash, write=True, format=True) as b:
                have = set(b.walk()[1])
                for p in gone:
                    if p in have:
                        b.remove(p)
                for p in changed:
                    b.write(p, paths[p].read_bytes(), snap[p][1])
        return snap
    if not paths and not dirs and state(flash) == "blank":
        return snap  # left for the port's first boot (inisetup.setup())
    files = {p: (f.read_bytes(), f.stat().st_mtime_ns) for p, f in paths.items()}
    write_files(flash, files, dirs)
    return snap


def mirror_out(flash: str | Path, fs_dir: str | Path) -> dict[str, tuple[int, int]]:
    """Copy the board's filesystem into the directory `fs_dir` (created if missing): files
    that differ are written (their mtime set to the board's), files and directories the board
    does not have are removed. Returns fs_dir's snapshot()."""
    root = Path(fs_dir)
    with Board(flash) as b:
        bdirs, bfiles = b.walk()
        root.mkdir(parents=True, exist_ok=True)
        hdirs, hpaths = _host_tree(root)
        for p, f in hpaths.items():
            if p not in bfiles:
                f.unlink()
        for d in sorted(hdirs, reverse=True):
            if d not in bdirs:
                (root / d.lstrip("/")).rmdir()
        for d in bdirs:
            (root / d.lstrip("/")).mkdir(parents=True, exist_ok=True)
        for p in bfiles:
            data, mtime = b.read(p)
            f = root / p.lstrip("/")
            if f.is_file() and f.read_bytes() == data:
                continue
            f.write_bytes(data)
            if mtime is not None:
                os.utime(f, ns=(mtime, mtime))
    return snapshot(root)

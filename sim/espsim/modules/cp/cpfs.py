# The board's filesystem for device code under CPython (simfs.py under MicroPython mounts
# vfs.VfsLfs2): the same littlefs2, with the port's geometry, through littlefs-python over
# flashbdev.bdev (the simulated esp32.Partition: every read, program and erase goes through the
# simulated NOR flash and its power cut), put behind open() and the os functions the device code
# uses (stat, listdir, mkdir, rmdir, remove, rename, replace, getcwd, chdir, statvfs) for the
# board's paths; the host's paths (the module path, the flash image, /dev, /proc) stay the host's.
# VfsLfs2's mtime (attribute 1: 8 bytes little-endian, ns since 1970) is set when a file opened
# for writing is closed.

import builtins
import os
import posixpath
import sys
import time

import littlefs

ATTR_MTIME = 1
GEOMETRY = dict(
    block_size=4096,
    read_size=32,
    prog_size=32,
    lookahead_size=32,
    cache_size=128,
    block_cycles=100,
)


_dead = []  # the power is off: nothing more is read from the board (not even to import)


def _power_cut(e):
    # littlefs-python reports an exception in a block device callback as an error code and goes
    # on; a power cut must end the firmware as it does elsewhere (an uncaught PowerCut).
    if _dead:
        os._exit(1)
    _dead.append(e)
    import traceback

    sys.stdout.flush()
    traceback.print_exception(type(e), e, e.__traceback__)
    sys.stderr.flush()
    os._exit(1)


class _Bdev:
    # littlefs-python's context: the blocks of flashbdev.bdev
    def __init__(self, bdev):
        self.bdev = bdev

    def read(self, cfg, block, off, size):
        from espsim.flash import PowerCut

        buf = bytearray(size)
        try:
            self.bdev.readblocks(block, buf, off)
        except PowerCut as e:
            _power_cut(e)
        return buf

    def prog(self, cfg, block, off, data):
        from espsim.flash import PowerCut

        try:
            self.bdev.writeblocks(block, bytes(data), off)
        except PowerCut as e:
            _power_cut(e)
        return 0

    def erase(self, cfg, block):
        from espsim.flash import PowerCut

        try:
            self.bdev.ioctl(6, block)
        except PowerCut as e:
            _power_cut(e)
        return 0

    def sync(self, cfg):
        return 0


def _oserror(e, path=None):
    code = -getattr(e, "code", -5)
    return OSError(code, os.strerror(code), path) if path else OSError(code, os.strerror(code))


class Lfs:
    # What simfs.py needs of vfs.VfsLfs2: Lfs(bdev) mounts (OSError if it cannot), mkfs(bdev),
    # open(path, mode).
    def __init__(self, bdev):
        self.fs = littlefs.LittleFS(
            _Bdev(bdev), mount=False, block_count=bdev.ioctl(4, 0), **GEOMETRY
        )
        try:
            self.fs.mount()
        except littlefs.LittleFSError as e:
            raise _oserror(e) from None

    @staticmethod
    def mkfs(bdev):
        fs = littlefs.LittleFS(_Bdev(bdev), mount=False, block_count=bdev.ioctl(4, 0), **GEOMETRY)
        fs.format()

    def open(self, path, mode="r", buffering=-1, encoding=None, errors=None, newline=None):
        try:
            f = self.fs.open(path, mode, buffering, encoding, errors, newline)
        except littlefs.LittleFSError as e:
            raise _oserror(e, path) from None
        if any(c in mode for c in "wax+"):
            close = f.close
            fs = self.fs

            def closed():
                if f.closed:
                    return
                close()
                stamp = time.time_ns().to_bytes(8, "little")
                fs.setattr(path, ATTR_MTIME, stamp)

            f.close = closed
        return f

    def mtime(self, path):
        try:
            raw = self.fs.getattr(path, ATTR_MTIME)
        except littlefs.LittleFSError:
            return 0
        return int.from_bytes(raw, "little") // 10**9 if len(raw) == 8 else 0


class _Finder:
    # modules and packages (.py) in a directory of the board's filesystem
    def __init__(self, board, path):
        self.board, self.path = board, path.rstrip("/")

    def _is(self, path, kind):
        try:
            return self.board.fs.stat(path).type == kind
        except littlefs.LittleFSError:
            return False

    def find_spec(self, fullname, target=None):
        import importlib.util

        if _dead:
            return None

        base = self.path + "/" + fullname.rpartition(".")[2]
        if self._is(base + "/__init__.py", 1):
            spec = importlib.util.spec_from_file_location(
                fullname,
                base + "/__init__.py",
                loader=_Loader(self.board, base + "/__init__.py"),
                submodule_search_locations=[base],
            )
            return spec
        if self._is(base + ".py", 1):
            return importlib.util.spec_from_file_location(
                fullname, base + ".py", loader=_Loader(self.board, base + ".py")
            )
        return None

    def invalidate_caches(self):
        pass


class _Loader:
    def __init__(self, board, path):
        self.board, self.path = board, path

    def create_module(self, spec):
        return None

    def exec_module(self, module):
        with self.board.open(self.path) as f:
            src = f.read()
        exec(compile(src, self.path, "exec"), module.__dict__)


def install(board, host_paths):
    # open() and os.* on the board's paths go to `board` (an Lfs); the current directory is
    # the board's "/".
    fs = board.fs
    real = {
        n: getattr(os, n)
        for n in (
            "stat",
            "lstat",
            "listdir",
            "mkdir",
            "rmdir",
            "remove",
            "unlink",
            "rename",
            "replace",
            "getcwd",
            "chdir",
            "statvfs",
        )
    }
    real_open = builtins.open
    cwd = ["/"]
    hosts = [p.rstrip("/") for p in host_paths if p] + ["/dev", "/proc"]

    def where(path):
        # the board's absolute path, or None for a host path (or a file descriptor)
        if isinstance(path, int):
            return None
        p = os.fspath(path)
        if isinstance(p, bytes):
            p = p.decode()
        if p.startswith("/"):
            for h in hosts:
                if p == h or p.startswith(h + "/"):
                    return None
        return posixpath.normpath(posixpath.join(cwd[0], p)).replace("//", "/")

    def call(fn, path, *a):
        try:
            return fn(path, *a)
        except littlefs.LittleFSError as e:
            raise _oserror(e, path) from None

    def open_(file, mode="r", buffering=-1, encoding=None, errors=None, newline=None, *a, **k):
        p = where(file)
        if p is None:
            return real_open(file, mode, buffering, encoding, errors, newline, *a, **k)
        return board.open(p, mode, buffering, encoding, errors, newline)

    def stat(path, *a, **k):
        p = where(path)
        if p is None:
            return real["stat"](path, *a, **k)
        st = call(fs.stat, p)
        mode = 0o040000 if st.type == 2 else 0o100000
        t = board.mtime(p)
        return os.stat_result((mode, 0, 0, 0, 0, 0, st.size, t, t, t))

    def listdir(path="."):
        p = where(path)
        if p is None:
            return real["listdir"](path)
        return [e.name for e in call(fs.scandir, p)]

    def one(name, fn):
        def f(path, *a, **k):
            p = where(path)
            if p is None:
                return real[name](path, *a, **k)
            return call(fn, p)

        return f

    def rename(src, dst, *a, **k):
        s, d = where(src), where(dst)
        if s is None and d is None:
            return real["rename"](src, dst, *a, **k)
        if s is None or d is None:
            raise OSError(18, os.strerror(18), src)  # EXDEV
        try:
            fs.rename(s, d)
        except littlefs.LittleFSError as e:
            raise _oserror(e, src) from None

    def chdir(path):
        p = where(path)
        if p is None:
            return real["chdir"](path)
        if call(fs.stat, p).type != 2:
            raise OSError(20, os.strerror(20), path)  # ENOTDIR
        cwd[0] = p

    def statvfs(path):
        p = where(path)
        if p is None:
            return real["statvfs"](path)
        n = fs.cfg.block_count
        free = n - fs.used_block_count
        return os.statvfs_result((4096, 4096, n, free, free, 0, 0, 0, 0, 255))

    # imports from the board's paths on sys.path ("/lib"): CPython's own finders read the host
    def hook(entry):
        p = where(entry) if entry else None
        if p is None:
            raise ImportError("a host path")
        return _Finder(board, p)

    sys.path_hooks.insert(0, hook)
    sys.path_importer_cache.clear()
    builtins.open = open_
    os.stat = os.lstat = stat
    os.listdir = listdir
    os.mkdir = one("mkdir", fs.mkdir)
    os.rmdir = one("rmdir", fs.rmdir)
    os.remove = os.unlink = one("remove", fs.remove)
    os.rename = os.replace = rename
    os.getcwd = lambda: cwd[0]
    os.chdir = chdir
    os.statvfs = statvfs

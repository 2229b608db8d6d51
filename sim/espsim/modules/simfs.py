# The board's filesystem in the process that plays the firmware (MicroPython's unix port; under
# CPython, cp/cpfs.py behind open() and os.*), as
# ports/esp32/modules/_boot.py and inisetup.py make it: littlefs2 (vfs.VfsLfs2, the port's
# defaults: read/prog 32, lookahead 32, mtime on) over flashbdev.bdev, the "vfs" partition (or
# the region main.c registers past the table, espsim/parttable.py), through the simulated
# esp32.Partition: every read, program and erase goes through the simulated NOR flash and its
# power cut.
# - littlefs in block 0 or 1: mounted;
# - block 0 blank: inisetup.setup(): "Performing initial setup", mkfs, boot.py written;
# - anything else: inisetup.fs_corrupted(), which a board loops in forever (printing its text
#   every 3 s); here the text is printed once and the process ends with FS_CORRUPTED.
# The filesystem is mounted at / (_Root), with the host paths the interpreter needs (its module
# path, the flash image) still reachable through the same mount: os.listdir("/") shows only
# the board's files.

import sys

HOST_PATHS = []  # more host paths to keep reachable (e.g. the script being run)
FS_CORRUPTED = 76  # exit status of a process whose filesystem is corrupted (fs_corrupted())

STOCK_BOOT_PY = """\
# This file is executed on every boot (including wake-boot from deepsleep)
#import esp
#esp.osdebug(None)
#import webrepl
#webrepl.start()
"""

CORRUPTED_TEXT = """\
The filesystem appears to be corrupted. If you had important data there, you
may want to make a flash snapshot to try to recover it. Otherwise, perform
factory reprogramming of MicroPython firmware (completely erase flash, followed
by firmware programming).
"""


def _is_lfs2(bdev):
    # mp_vfs_autodetect(): the littlefs2 magic at offset 8 of block 0 or 1
    buf = bytearray(8)
    for n in (0, 1):
        bdev.readblocks(n, buf, 8)
        if buf == b"littlefs":
            return True
    return False


def fs_corrupted():
    print(CORRUPTED_TEXT)
    sys.exit(FS_CORRUPTED)


_MP = sys.implementation.name == "micropython"


def _lfs2():
    # vfs.VfsLfs2 under MicroPython; under CPython its stand-in over littlefs-python (cp/cpfs.py)
    if _MP:
        import vfs

        return vfs.VfsLfs2
    import cpfs

    return cpfs.Lfs


def _setup(bdev):
    # inisetup.setup(): check_bootsec(), then a fresh littlefs with the port's boot.py
    buf = bytearray(bdev.ioctl(5, 0))
    bdev.readblocks(0, buf)
    for b in buf:
        if b != 0xFF:
            fs_corrupted()
    print("Performing initial setup")
    lfs2 = _lfs2()
    lfs2.mkfs(bdev)
    fs = lfs2(bdev)
    with fs.open("/boot.py", "w") as f:
        f.write(STOCK_BOOT_PY)
    return fs


def board_fs():
    # The board's filesystem (a VfsLfs2, not mounted yet), or None when it has no partition.
    from flashbdev import bdev

    if not bdev:
        return None
    try:
        if _is_lfs2(bdev):
            return _lfs2()(bdev)
        raise OSError(19)  # ENODEV: the port's VfsFat then fails to mount
    except OSError:
        return _setup(bdev)


class _Root:
    # The VFS mounted at /: the board's filesystem, except for the host paths in `host_paths`
    # (absolute, whole path components), which go to the host's.
    def __init__(self, board, host, host_paths):
        self.board = board
        self.host = host
        self.paths = host_paths

    def _fs(self, path):
        if path[:1] == "/":
            for p in self.paths:
                if path == p or path.startswith(p + "/"):
                    return self.host
        return self.board

    def mount(self, readonly, mkfs):
        pass

    def umount(self):
        pass

    def open(self, path, mode):
        return self._fs(path).open(path, mode)

    def ilistdir(self, path):
        return self._fs(path).ilistdir(path)

    def stat(self, path):
        return self._fs(path).stat(path)

    def statvfs(self, path):
        return self._fs(path).statvfs(path)

    def mkdir(self, path):
        return self._fs(path).mkdir(path)

    def rmdir(self, path):
        return self._fs(path).rmdir(path)

    def remove(self, path):
        return self._fs(path).remove(path)

    def rename(self, old, new):
        return self._fs(old).rename(old, new)

    def chdir(self, path):
        return self.board.chdir(path)

    def getcwd(self):
        return self.board.getcwd()


def mount(board=None):
    # _boot.py: the board's filesystem at /, and "/lib" on sys.path (ports/esp32/main.c). The
    # host paths stay reachable (the module path, $ESPSIM_FLASH and its .state, $ESPSIM_TRACE).
    import os

    if board is None:
        board = board_fs()
    if board is None:
        return None
    paths = [p.rstrip("/") for p in sys.path if p[:1] == "/"] + HOST_PATHS
    for var in ("ESPSIM_FLASH", "ESPSIM_TRACE"):
        v = os.getenv(var)
        if v:
            paths.append(v)
            paths.append(v + ".state")
    if not _MP:
        import cpfs

        cpfs.install(board, paths)
        sys.path.append("/lib")
        return board
    import vfs

    root = _Root(board, vfs.VfsPosix(), paths)
    vfs.umount("/")
    vfs.mount(root, "/")
    os.chdir("/")
    sys.path.append("/lib")
    return board

# The pure-Python backend, for stock MicroPython firmware: writes through esp32.Partition and
# hashes with hashlib (mbedtls, hardware SHA on ESP32).
#
# Erases: Partition.writeblocks(n, buf) erases len(buf) bytes first, with
# esp_partition_erase_range(), which takes a 64 KB block erase when the range covers an aligned
# 64 KB block. A 64 KB chunk buffer therefore gets 64 KB erases (3x faster on the flash than
# sixteen 4 KB ones); a 4 KB buffer gets 4 KB erases.
#
# The buffer is 64 KB whenever one can be allocated, else 4 KB. gc.mem_free() cannot tell: on
# the esp32 port the heap starts small (56 KB on an ESP32) and grows by new areas when an
# allocation fails (MICROPY_GC_SPLIT_HEAP_AUTO, py/gc.c gc_try_add_heap), so the allocation is
# simply tried, after a collection.
#
# The last chunk (less than 64 KB) can also take one 64 KB erase: Partition has no other way to
# erase 64 KB than writeblocks() of 64 KB, so the buffer is padded with 0xFF and written whole
# when that is cheaper on the flash than the tail's 4 KB erases (datasheet typicals: a 64 KB
# erase 150 ms, a 4 KB erase 45 ms, a page program 0.4 ms): from five 4 KB sectors on.

import binascii
import gc
import hashlib

from esp32 import Partition

from . import _image, _otadata

try:
    from micropython import const
except ImportError:

    def const(x):
        return x


_BLOCK = const(4096)
_BIG = const(65536)
_IOCTL_BLOCK_ERASE = const(6)
_T_SECTOR = const(45000)  # us: 4 KB erase
_T_BLOCK = const(150000)  # us: 64 KB erase
_T_PAGE = const(400)  # us: 256-byte page program


def buffer(size=0):
    # The chunk buffer: `size` bytes if given, else 64 KB if it can be had, else 4 KB.
    if size:
        return bytearray(size)
    gc.collect()
    try:
        return bytearray(_BIG)
    except MemoryError:
        return bytearray(_BLOCK)


# A stream's readinto(buf) must return how many bytes it put in buf: 0 at the end, None when a
# non-blocking stream has none yet. Anything else is the stream's error, refused before a byte
# is used, in the native core's words (ota_core_message).
def read_count(n, size):
    if n is None or isinstance(n, int) and 0 <= n <= size:
        return n
    if not isinstance(n, int):
        what = "a " + type(n).__name__
    elif -0x40000000 < n < 0x40000000:
        what = "%d" % n
    else:
        what = "a huge int"
    raise ValueError(
        "Stream error: readinto() returned %s for a buffer of %d bytes." % (what, size)
    )


# Whether a tail of n bytes (< 64 KB, from a 64 KB boundary) is cheaper with one 64 KB erase
# and the 0xFF pages written after it than with its own 4 KB erases.
def _tail_block(n):
    sectors = -(-n // _BLOCK)
    pages = -(-n // 256)
    return _T_BLOCK + (256 - pages) * _T_PAGE < sectors * _T_SECTOR


# buf[n:] = 0xFF, by doubling copies within buf (no 64 KB temporary, few steps)
def _fill_ff(buf, n):
    end = len(buf)
    buf[n] = 0xFF
    k = 1
    while n + k < end:
        m = min(k, end - n - k)
        buf[n + k : n + k + m] = buf[n : n + m]
        k += m


class Session:
    def __init__(self, part, running, confirm, start=0, chunk=0):
        self.part = part
        self.size = part.info()[3]
        self.chip = _image.running_chip(running)
        self.confirm = confirm  # mark the running app valid before the first erase
        self.buf = memoryview(buffer(chunk))
        self.buffer = len(self.buf)  # for the verbose line
        self.cap = len(self.buf)  # bytes to collect before the next flush
        self.fill = 0  # bytes waiting in buf
        self.nbytes = 0  # bytes received
        self.written = 0  # bytes written to flash
        self.hash = hashlib.sha256()
        self.hex = None
        self.progress = None
        self.dead = False
        if start:
            self._resume(start)

    # The partition already holds the image's first `start` bytes (a multiple of 4 KB): hash
    # them again from flash, so that the final SHA-256 covers every byte, and go on from there.
    def _resume(self, start):
        buf = self.buf
        pos = 0
        while pos < start:
            n = min(len(buf), start - pos)
            self.part.readblocks(pos // _BLOCK, buf[:n])
            if pos == 0:
                err = _image.error(buf[:n], self.chip)
                if err:
                    raise ValueError(err)
            self.hash.update(buf[:n])
            pos += n
        self.nbytes = self.written = start
        self.cap = len(buf) - start % len(buf)  # flush on the buffer's alignment again

    def _flush(self):
        n = self.fill
        if n == 0:
            return
        mv = self.buf[:n]
        if self.written == 0:
            err = _image.error(mv, self.chip)
            if err:
                raise ValueError(err)
            if self.confirm:
                Partition.mark_app_valid_cancel_rollback()
                self.confirm = False
        if self.written + n > self.size:
            raise ValueError(
                "Image is larger than partition '%s' (%d bytes)."
                % (self.part.info()[4], self.size)
            )
        block = self.written // _BLOCK
        whole = n // _BLOCK * _BLOCK
        if (
            n < _BIG == len(self.buf)
            and self.written % _BIG == 0
            and self.written + _BIG <= self.size
            and _tail_block(n)
        ):
            # the tail: one 64 KB erase (padded with 0xFF, the bytes after it stay erased)
            _fill_ff(self.buf, n)
            self.part.writeblocks(block, self.buf)
            whole = n
        elif whole:
            self.part.writeblocks(block, mv[:whole])  # erases, then programs
        if whole < n:
            self.part.ioctl(_IOCTL_BLOCK_ERASE, block + whole // _BLOCK)
            self.part.writeblocks(block + whole // _BLOCK, mv[whole:], 0)
        self.written += n
        self.fill = 0
        self.cap = len(self.buf)
        if self.progress:
            self.progress(self.written)

    @property
    def flashed(self):
        return self.written

    # Partition.writeblocks() erases what it programs: nothing is erased ahead of the data.
    @property
    def erased(self):
        return self.written

    def _check(self):
        if self.dead:
            raise ValueError("This OTA update was aborted.")

    def write(self, data):
        self._check()
        try:
            src = memoryview(data)
            n = len(src)
            self.hash.update(src)
            self.nbytes += n
            pos = 0
            while pos < n:
                k = min(self.cap - self.fill, n - pos)
                self.buf[self.fill : self.fill + k] = src[pos : pos + k]
                self.fill += k
                pos += k
                if self.fill == self.cap:
                    self._flush()
            return n
        except BaseException:
            self.abort()
            raise

    def write_from(self, stream, limit=-1):
        # Read a stream straight into the chunk buffer with readinto(), no other copy.
        self._check()
        try:
            if not hasattr(stream, "readinto") and hasattr(stream, "buffer"):
                stream = stream.buffer  # a CPython text file: read its bytes
            start = self.nbytes
            while limit < 0 or self.nbytes - start < limit:
                room = self.cap - self.fill
                if limit >= 0:
                    room = min(room, limit - (self.nbytes - start))
                mv = self.buf[self.fill : self.fill + room]
                n = read_count(stream.readinto(mv), room)
                if n is None:  # a non-blocking stream with nothing to read yet
                    continue
                if n == 0:
                    break
                self.hash.update(mv[:n])
                self.fill += n
                self.nbytes += n
                if self.fill == self.cap:
                    self._flush()
            return self.nbytes - start
        except BaseException:
            self.abort()
            raise

    # Write what is left in the buffer; returns the SHA-256 (hex) of all bytes received.
    def flush(self):
        self._check()
        try:
            if self.fill and self.written == 0 and self.fill < _image.HEAD:
                raise ValueError(_image.error(self.buf[: self.fill], self.chip))
            self._flush()
        except BaseException:
            self.abort()
            raise
        if self.hex is None:
            self.hex = binascii.hexlify(self.hash.digest()).decode()
        return self.hex

    # All data is in: read the image back from flash and compare hashes. (The image itself is
    # verified by commit().)
    def finish(self, verify=True):
        sha = self.flush()
        try:
            if verify:
                got = self.readback_sha()
                if got != sha:
                    raise ValueError("SHA verify failed: write=%s read=%s" % (sha, got))
        except BaseException:
            self.abort()
            raise

    # esp_ota_set_boot_partition(): verifies the whole image (OSError(-5379) if it is not a
    # valid app for this chip), then points otadata at it.
    def commit(self):
        self.part.set_boot()

    def readback_sha(self):
        h = hashlib.sha256()
        buf = self.buf
        size = len(buf)
        pos = 0
        while pos < self.written:
            n = min(size, self.written - pos)
            if n == size:
                self.part.readblocks(pos // _BLOCK, buf)
            else:
                self.part.readblocks(pos // _BLOCK, buf[:n], pos % _BLOCK)
            h.update(buf[:n])
            pos += n
        return binascii.hexlify(h.digest()).decode()

    def abort(self):
        # Nothing on flash needs undoing: the boot partition was never changed, and a partial
        # image in the spare slot cannot be booted (it fails esp_image_verify).
        self.dead = True
        self.buf = None


class Backend:
    name = "pure"

    def session(self, part, running, confirm, length=0, start=0, erased=0):
        return Session(part, running, confirm, start)

    def state(self, part):
        return _otadata.state(part.info())

    def describe(self, part):
        buf = bytearray(256)
        part.readblocks(0, buf, 32)
        return _image.describe(buf)

    def mark_valid(self):
        Partition.mark_app_valid_cancel_rollback()

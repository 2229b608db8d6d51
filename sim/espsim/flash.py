# NOR flash in a file, with the operations and physics of a SPI NOR chip:
# - erase sets every byte of a 4 KB sector or a 64 KB block to 0xFF;
# - a page program (up to 256 bytes, never crossing a page boundary) can only clear bits;
# - esp_flash_erase_region() takes a 64 KB block erase wherever the range allows it, else 4 KB
#   sectors (components/spi_flash/esp_flash_api.c).
# Every operation is counted by kind. A power-cut switch stops the chip after N erase/program
# operations: the interrupted operation is left half done (the first half of its bytes erased or
# programmed), PowerCut is raised, and every later operation raises PowerCut again.
#
# Under MicroPython this code runs on the device's heap, where the real flash driver is C with
# none: readinto(), erases and programs allocate nothing (no copy of the caller's buffer, one
# 4 KB scratch buffer reused; MicroPython's stream readinto(buf, n) and write(buf, off, n)),
# so that the simulator leaves the heap a board would have to the code under test.

from espsim import errors

try:
    import micropython  # noqa: F401 (sys is the board's, from the image: not asked here)

    _MP = True
except ImportError:
    _MP = False

SECTOR = 4096
BLOCK = 65536
PAGE = 256

KINDS = ("erase_4k", "erase_64k", "program_pages", "program_bytes", "read_ops", "read_bytes")


class PowerCut(BaseException):
    # BaseException, so that device code's `except Exception` cannot swallow a power cut.
    pass


def _and_into(s, src, off, k):
    # s[:k] &= src[off:off + k]
    if _MP:  # byte by byte: allocates nothing
        while k:
            k -= 1
            s[k] &= src[off + k]
    else:
        _and_big(s, src, off, k)


def _and_big(s, src, off, k):
    new = int.from_bytes(s[:k], "little") & int.from_bytes(src[off : off + k], "little")
    s[:k] = new.to_bytes(k, "little")


class Flash:
    def __init__(self, path, cut_after=None):
        self.path = path
        # Unbuffered: the C host backend may share this file within the same process.
        self.f = open(path, "r+b", buffering=0)
        self.f.seek(0, 2)
        self.size = self.f.tell()
        self.counts = {}
        for k in KINDS:
            self.counts[k] = 0
        self.cut_after = cut_after  # erase/program operations left before the power fails
        self.dead = False
        self._ff = b"\xff" * SECTOR
        self._scratch = bytearray(SECTOR)
        self._src = None  # the data being programmed

    def close(self):
        if self.f:
            self.f.close()
            self.f = None

    # The power-cut switch. Returns True when this operation is the one the power fails in.
    def _begin_op(self):
        if self.dead:
            raise PowerCut("flash is unpowered")
        if self.cut_after is None:
            return False
        if self.cut_after <= 0:
            self.dead = True
            return True
        self.cut_after -= 1
        return False

    def _cut(self, what):
        self.f.flush()
        raise PowerCut("power cut during " + what)

    def _check_range(self, addr, length):
        if addr < 0 or length < 0 or addr + length > self.size:
            raise errors.EspError(errors.ESP_ERR_INVALID_ARG, "flash range out of bounds")

    def _raw_read(self, addr, length):
        self.f.seek(addr)
        return self.f.read(length)

    def _raw_write(self, addr, data, off=0, n=-1):
        # data[off:off + n] (n < 0: all of it) at addr, without slicing data under MicroPython
        self.f.seek(addr)
        if n < 0:
            self.f.write(data)
        elif _MP:
            self.f.write(data, off, n)
        else:
            self.f.write(memoryview(data)[off : off + n])

    def _raw_readinto(self, addr, buf, n):
        self.f.seek(addr)
        if _MP:
            got = self.f.readinto(buf, n)
        else:
            got = self.f.readinto(memoryview(buf)[:n])
        if got != n:
            raise errors.EspError(errors.ESP_FAIL, "short read of the flash file")

    def read(self, addr, length):
        self._check_range(addr, length)
        if self.dead:
            raise PowerCut("flash is unpowered")
        self.counts["read_ops"] += 1
        self.counts["read_bytes"] += length
        return self._raw_read(addr, length)

    # esp_flash_read() into the caller's buffer (its first len(buf) bytes, or n).
    def readinto(self, addr, buf, n=-1):
        if n < 0:
            n = len(buf)
        self._check_range(addr, n)
        if self.dead:
            raise PowerCut("flash is unpowered")
        self.counts["read_ops"] += 1
        self.counts["read_bytes"] += n
        if n:
            self._raw_readinto(addr, buf, n)

    # (The functions on the erase and program paths keep their frames within MicroPython's
    # 11 words that stay off the heap: hence the small helpers and self._src.)
    def _erase(self, addr, size, kind):
        half = self._begin_op()
        self.counts[kind] += 1
        self._fill_ff(addr, size // 2 if half else size)
        if half:
            self._cut(kind + " at 0x%x" % addr)
        self.f.flush()

    def _fill_ff(self, addr, n):
        while n > 0:
            k = min(n, SECTOR)
            self._raw_write(addr, self._ff, 0, k)
            addr += k
            n -= k

    def erase_sector(self, addr):
        self._check_range(addr, SECTOR)
        self._erase(addr, SECTOR, "erase_4k")

    def erase_block(self, addr):
        self._check_range(addr, BLOCK)
        self._erase(addr, BLOCK, "erase_64k")

    # esp_flash_erase_region(): 64 KB blocks where aligned and long enough, else 4 KB sectors.
    def erase_region(self, start, length):
        if start % SECTOR or length % SECTOR:
            raise errors.EspError(errors.ESP_ERR_INVALID_ARG, "erase not sector aligned")
        self._check_range(start, length)
        while length > 0:
            if start % BLOCK == 0 and length >= BLOCK:
                self.erase_block(start)
                start += BLOCK
                length -= BLOCK
            else:
                self.erase_sector(start)
                start += SECTOR
                length -= SECTOR

    # esp_flash_write(): one page program per 256-byte page touched; NOR can only clear bits.
    def program(self, addr, data):
        n = len(data)
        self._check_range(addr, n)
        if n == 0:
            return
        if self.dead:
            raise PowerCut("flash is unpowered")
        pages = (addr + n - 1) // PAGE - addr // PAGE + 1
        if self.cut_after is not None and self.cut_after < pages:
            self._program_cut(addr, data)
            return
        # The power holds for the whole write: program it in one go.
        if self.cut_after is not None:
            self.cut_after -= pages
        self.counts["program_pages"] += pages
        self.counts["program_bytes"] += n
        self._src = data
        self._program_bits(addr, 0, n)
        self._src = None
        self.f.flush()

    def _program_cut(self, addr, data):
        # page by page, until the operation that the power fails in
        length = len(data)
        self._src = data
        pos = 0
        while pos < length:
            page_end = (addr + pos) // PAGE * PAGE + PAGE
            n = min(length - pos, page_end - (addr + pos))
            half = self._begin_op()
            if half:
                n //= 2
            self.counts["program_pages"] += 1
            self.counts["program_bytes"] += n
            self._program_bits(addr + pos, pos, n)
            if half:
                self._src = None
                self._cut("page program at 0x%x" % (addr + pos))
            pos += n
        self._src = None

    # self._src[off:off + n] onto the flash at addr: bits can only be cleared (old AND new).
    # Through the scratch buffer, a sector at a time; an erased range (usual) is a plain copy.
    def _program_bits(self, addr, off, n):
        while n > 0:
            k = min(n, SECTOR)
            self._raw_readinto(addr, self._scratch, k)
            if self._scratch.count(b"\xff", 0, k) != k:
                self._and_src(off, k)
                self._raw_write(addr, self._scratch, 0, k)
            else:
                self._raw_write(addr, self._src, off, k)
            addr += k
            off += k
            n -= k

    def _and_src(self, off, k):
        _and_into(self._scratch, self._src, off, k)

    def snapshot_counts(self):
        c = {}
        for k in KINDS:
            c[k] = self.counts[k]
        return c

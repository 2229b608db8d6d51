# NOR flash in a file, with the operations and physics of a SPI NOR chip:
# - erase sets every byte of a 4 KB sector or a 64 KB block to 0xFF;
# - a page program (up to 256 bytes, never crossing a page boundary) can only clear bits;
# - esp_flash_erase_region() takes a 64 KB block erase wherever the range allows it, else 4 KB
#   sectors (components/spi_flash/esp_flash_api.c).
# Every operation is counted by kind. A power-cut switch stops the chip after N erase/program
# operations: the interrupted operation is left half done (the first half of its bytes erased or
# programmed), PowerCut is raised, and every later operation raises PowerCut again.

from espsim import errors

SECTOR = 4096
BLOCK = 65536
PAGE = 256

KINDS = ("erase_4k", "erase_64k", "program_pages", "program_bytes", "read_ops", "read_bytes")


class PowerCut(BaseException):
    # BaseException, so that device code's `except Exception` cannot swallow a power cut.
    pass


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
        self._ff = memoryview(b"\xff" * SECTOR)

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

    def _raw_write(self, addr, data):
        self.f.seek(addr)
        self.f.write(data)

    def read(self, addr, length):
        self._check_range(addr, length)
        if self.dead:
            raise PowerCut("flash is unpowered")
        self.counts["read_ops"] += 1
        self.counts["read_bytes"] += length
        return self._raw_read(addr, length)

    def _erase(self, addr, size, kind):
        half = self._begin_op()
        self.counts[kind] += 1
        n = size // 2 if half else size
        pos = addr
        while n > 0:
            k = min(n, SECTOR)
            self._raw_write(pos, self._ff[:k])
            pos += k
            n -= k
        if half:
            self._cut(kind + " at 0x%x" % addr)
        self.f.flush()

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
        length = len(data)
        self._check_range(addr, length)
        if length == 0:
            return
        if self.dead:
            raise PowerCut("flash is unpowered")
        pages = (addr + length - 1) // PAGE - addr // PAGE + 1
        if self.cut_after is None or self.cut_after >= pages:
            # The power holds for the whole write: program it in one go.
            if self.cut_after is not None:
                self.cut_after -= pages
            self.counts["program_pages"] += pages
            self.counts["program_bytes"] += length
            self._program_bits(addr, data)
            self.f.flush()
            return
        pos = 0
        while pos < length:
            page_end = (addr + pos) // PAGE * PAGE + PAGE
            n = min(length - pos, page_end - (addr + pos))
            half = self._begin_op()
            if half:
                n //= 2
            self.counts["program_pages"] += 1
            self.counts["program_bytes"] += n
            self._program_bits(addr + pos, data[pos : pos + n])
            if half:
                self._cut("page program at 0x%x" % (addr + pos))
            pos += n

    def _program_bits(self, addr, data):
        n = len(data)
        if n == 0:
            return
        old = self._raw_read(addr, n)
        if old.count(b"\xff") == n:  # erased: programming is a plain copy
            self._raw_write(addr, data)
            return
        new = int.from_bytes(old, "little") & int.from_bytes(bytes(data), "little")
        self._raw_write(addr, new.to_bytes(n, "little"))

    def snapshot_counts(self):
        c = {}
        for k in KINDS:
            c[k] = self.counts[k]
        return c

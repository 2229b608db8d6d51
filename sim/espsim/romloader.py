# The simulated chip's serial download mode: the ROM loader of each chip and, once esptool has
# uploaded its flasher stub, the stub, as esptool 5 talks to them (CPython only: zlib, hashlib).
#
# Sources, read in esptool 5.6.0 (esptool/loader.py, targets/*.py, cmds.py) and in the stubs it
# ships (esp-flasher-stub v1.x, src/command_handler.c; esptool-legacy-flasher-stub):
# - SLIP frames both ways; a command is (0x00, op, len16, checksum32, data), a response
#   (0x01, op, len16, value32, data + status). The ROM's status is 4 bytes (status, error, 0, 0),
#   the stub's 2 bytes (its response code, big-endian: 0x0000, 0xC000 bad length, ...).
# - SYNC: eight responses, value 0x20120707 from the ROM and 0 from the stub (esptool tells the
#   stub by that 0).
# - chip detection: GET_SECURITY_INFO (20 bytes of info with the chip id from the S3 on, 12 on the
#   S2, unknown to the ESP32 ROM), else READ_REG of the magic word at 0x40001000 (ESP32, S2).
# - what esptool then reads with READ_REG: eFuse words (chip revision, package, MAC), the UART
#   clock divider (crystal), and the SPI flash controller's user-command registers, through which
#   it sends RDID (flash id), RDSFDP, RDSR and the reset commands to the flash chip: answered by
#   a small model of that controller in front of a W25Q-like flash chip (id EF 40 nn, nn =
#   log2(size)).
# - the ROM erases the whole region at FLASH_BEGIN / FLASH_DEFL_BEGIN and writes each 1 KB block
#   (padding included) at its sequence number; the stub erases as it writes and writes exactly
#   the size it was given. MEM_BEGIN/DATA/END (the stub upload) is checked and kept, not run:
#   MEM_END with an entry point turns this loader into the stub, which says "OHAI".
# Flash writes go through espsim.flash.Flash (NOR: erase to 0xFF, programming clears bits).

import hashlib
import struct
import zlib

from espsim import chips
from espsim.flash import SECTOR, Flash

SYNC_VALUE = 0x20120707
SYNC_DATA = b"\x07\x07\x12\x20" + b"\x55" * 32

# commands (esptool loader.py ESP_CMDS)
FLASH_BEGIN = 0x02
FLASH_DATA = 0x03
FLASH_END = 0x04
MEM_BEGIN = 0x05
MEM_END = 0x06
MEM_DATA = 0x07
SYNC = 0x08
WRITE_REG = 0x09
READ_REG = 0x0A
SPI_SET_PARAMS = 0x0B
SPI_ATTACH = 0x0D
READ_FLASH_SLOW = 0x0E
CHANGE_BAUDRATE = 0x0F
FLASH_DEFL_BEGIN = 0x10
FLASH_DEFL_DATA = 0x11
FLASH_DEFL_END = 0x12
SPI_FLASH_MD5 = 0x13
GET_SECURITY_INFO = 0x14
ERASE_FLASH = 0xD0
ERASE_REGION = 0xD1
READ_FLASH = 0xD2
RUN_USER_CODE = 0xD3

# ROM loader errors (esptool docs, serial-protocol.rst "ROM Loader Errors")
ROM_INVALID_PARAM = 0x01
ROM_BAD_MESSAGE = 0x05
ROM_RESULT_WRONG = 0x06
ROM_CHECKSUM = 0x07
ROM_FLASH_READ_LEN = 0x0A
ROM_DEFLATE = 0x0B

# stub response codes (esp-flasher-stub src/commands.h), sent big-endian
STUB_BAD_DATA_LEN = 0xC000
STUB_BAD_DATA_CHECKSUM = 0xC100
STUB_INVALID_COMMAND = 0xC300
STUB_FAILED_SPI_OP = 0xC400
STUB_NOT_IN_FLASH_MODE = 0xC600
STUB_INFLATE_ERROR = 0xC700
STUB_NOT_ENOUGH_DATA = 0xC800
STUB_TOO_MUCH_DATA = 0xC900
STUB_CMD_NOT_IMPLEMENTED = 0xFF00

MAX_FRAME = 0x10000 + 8  # a command's data is at most 65535 bytes


def slip_encode(payload):
    return b"\xc0" + payload.replace(b"\xdb", b"\xdb\xdd").replace(b"\xc0", b"\xdb\xdc") + b"\xc0"


class SlipDecoder:
    # Frames from a byte stream; bytes outside frames are dropped, as the ROM drops them.
    def __init__(self):
        self.buf = None
        self.esc = False

    def feed(self, data):
        out = []
        for b in data:
            if self.buf is None:
                if b == 0xC0:
                    self.buf = bytearray()
                continue
            if self.esc:
                self.esc = False
                if b == 0xDC:
                    self.buf.append(0xC0)
                elif b == 0xDD:
                    self.buf.append(0xDB)
                else:
                    self.buf = None  # a broken frame is dropped
                continue
            if b == 0xDB:
                self.esc = True
            elif b == 0xC0:
                if self.buf:
                    out.append(bytes(self.buf))
                    self.buf = None
                else:
                    self.buf = bytearray()  # back-to-back delimiters: a new frame starts
            else:
                self.buf.append(b)
                if len(self.buf) > MAX_FRAME:
                    self.buf = None
        return out


# ---- the chips as esptool reads them (register addresses and bit fields: esptool/targets) ----


class ChipRegs:
    # Per chip: SPI flash controller (base, USR, USR1, USR2, MOSI_DLEN, MISO_DLEN, W0 offsets,
    # whether the address register is MSB-aligned), UART clock divider register, magic word,
    # GET_SECURITY_INFO size (0: the ROM lacks the command), and a function giving the eFuse
    # words for (revision, mac).
    def __init__(self, spi, clkdiv, magic, secinfo, efuse):
        self.spi = spi
        self.clkdiv = clkdiv
        self.magic = magic
        self.secinfo = secinfo
        self.efuse = efuse


SPI_ESP32 = (0x3FF42000, 0x1C, 0x20, 0x24, 0x28, 0x2C, 0x80, True)
SPI_S2 = (0x3F402000, 0x18, 0x1C, 0x20, 0x24, 0x28, 0x58, False)
SPI_60002 = (0x60002000, 0x18, 0x1C, 0x20, 0x24, 0x28, 0x58, False)  # S3, C3, C2
SPI_60003 = (0x60003000, 0x18, 0x1C, 0x20, 0x24, 0x28, 0x58, False)  # C6, C5


def _mac_words(mac):
    # (word0, word1) of the eFuse MAC as esptool's read_mac() unpacks them:
    # struct.pack(">II", word1, word0)[2:] == mac
    return int.from_bytes(mac[2:6], "big"), int.from_bytes(mac[0:2], "big")


def _efuse_esp32(rev, mac):
    # ESP32ROM: words at EFUSE_RD_REG_BASE 0x3FF5A000. MAC in words 1-2; word 3: package
    # (bits 9-11: 1 = D0WD), CPU rated (bit 13) at 240 MHz, rev bit 0 (bit 15); word 4: CK8M
    # frequency (bits 0-7) and ADC Vref (bits 8-12); word 5: rev bit 1 (bit 20), minor (24-25).
    # Major revision from 3 bits (rev bit 2 is APB_CTL_DATE bit 31): 0, 1, 3 (v2), 7 (v3).
    major, minor = rev // 100, rev % 100
    bits = {0: 0, 1: 1, 2: 3, 3: 7}.get(major, 7)
    w0, w1 = _mac_words(mac)
    base = 0x3FF5A000
    regs = {
        base + 4: w0,
        base + 8: w1,
        base + 12: (1 << 9) | (1 << 13) | ((bits & 1) << 15),
        base + 16: 50 | (17 << 8),
        base + 20: (((bits >> 1) & 1) << 20) | ((minor & 3) << 24),
        0x3FF6607C: ((bits >> 2) & 1) << 31,  # APB_CTL_DATE
        # RTCCALICFG1: the ROM's crystal estimate, cali * 15625 * CK8M / 40 = 40 MHz
        0x3FF5F06C: 2048 << 7,
    }
    return regs


def _efuse_s2(rev, mac):
    # ESP32S2ROM: BLOCK1 at 0x3F41A044: MAC words 0-1; word 3: major (bits 18-19), minor bit 3
    # (bit 20); word 4: minor bits 0-2 (bits 4-6).
    major, minor = rev // 100, rev % 100
    w0, w1 = _mac_words(mac)
    b1 = 0x3F41A044
    return {
        b1: w0,
        b1 + 4: w1,
        b1 + 12: ((major & 3) << 18) | (((minor >> 3) & 1) << 20),
        b1 + 16: (minor & 7) << 4,
    }


def _efuse_s3_c3(block1):
    # ESP32S3ROM / ESP32C3ROM: BLOCK1: MAC words 0-1; word 3: minor bits 0-2 (bits 18-20),
    # package (21-23: 0); word 5: minor bit 3 (bit 23), major (bits 24-25). (S3: BLOCK2's
    # BLK_VERSION fields are left 0, so that no revision reads as the v0.0 "eco0" case.)
    def efuse(rev, mac):
        major, minor = rev // 100, rev % 100
        w0, w1 = _mac_words(mac)
        return {
            block1: w0,
            block1 + 4: w1,
            block1 + 12: (minor & 7) << 18,
            block1 + 20: (((minor >> 3) & 1) << 23) | ((major & 3) << 24),
        }

    return efuse


def _efuse_c2(rev, mac):
    # ESP32C2ROM: BLOCK2 at 0x60008840: MAC words 0-1 (word 1 bits 0-15); word 1: minor
    # (bits 16-19), major (bits 20-21), package (22-24: 0).
    major, minor = rev // 100, rev % 100
    w0, w1 = _mac_words(mac)
    b2 = 0x60008840
    return {b2: w0, b2 + 4: w1 | ((minor & 15) << 16) | ((major & 3) << 20)}


def _efuse_c6(rev, mac):
    # ESP32C6ROM: BLOCK1 at 0x600B0844: MAC words 0-1, word 1 bits 16-31 the MAC_EXT that makes
    # the EUI-64 (FF FE); word 3: minor (bits 18-21), major (22-23), package (24-26: 0, QFN40).
    major, minor = rev // 100, rev % 100
    w0, w1 = _mac_words(mac)
    b1 = 0x600B0844
    return {
        b1: w0,
        b1 + 4: w1 | (0xFFFE << 16),
        b1 + 12: ((minor & 15) << 18) | ((major & 3) << 22),
    }


def _efuse_c5(rev, mac):
    # ESP32C5ROM: BLOCK1 at 0x600B4844: MAC words 0-1 (MAC_EXT FF FE); word 2: minor (bits 0-3),
    # major (4-5), flash 4 MB (13-15: 1) from XMC (16-18: 1), high temperature (24-25: 1): an
    # ESP32-C5HF4. PCR_SYSCLK_CONF: the ROM's crystal, 40 MHz (bits 24-30).
    major, minor = rev // 100, rev % 100
    w0, w1 = _mac_words(mac)
    b1 = 0x600B4844
    return {
        b1: w0,
        b1 + 4: w1 | (0xFFFE << 16),
        b1 + 8: (minor & 15) | ((major & 3) << 4) | (1 << 13) | (1 << 16) | (1 << 24),
        0x60096110: 40 << 24,
    }


CHIP_REGS = {
    "esp32": ChipRegs(SPI_ESP32, 0x3FF40014, 0x00F01D83, 0, _efuse_esp32),
    "esp32s2": ChipRegs(SPI_S2, 0x3F400014, 0x000007C6, 12, _efuse_s2),
    "esp32s3": ChipRegs(SPI_60002, 0x60000014, 0, 20, _efuse_s3_c3(0x60007044)),
    "esp32c3": ChipRegs(SPI_60002, 0x60000014, 0, 20, _efuse_s3_c3(0x60008844)),
    "esp32c2": ChipRegs(SPI_60002, 0x60000014, 0, 20, _efuse_c2),
    "esp32c6": ChipRegs(SPI_60003, 0x60000014, 0, 20, _efuse_c6),
    "esp32c5": ChipRegs(SPI_60003, 0x60000014, 0, 20, _efuse_c5),
}

XTAL_HZ = 40000000
FLASH_MFR = 0xEF  # Winbond
FLASH_TYPE = 0x40  # W25Q..: 25Q SPI, 3 V


def sfdp_table():
    # A minimal SFDP table of a W25Q: "SFDP", v1.5, one parameter header (JEDEC basic, 9 words
    # at 0x80), then 0xFF; esptool checks the signature and reads byte 0x10 (an XMC check).
    head = b"SFDP" + bytes([0x05, 0x01, 0x00, 0xFF]) + bytes([0x00, 0x05, 0x01, 9, 0x80, 0, 0])
    return head + b"\xff" * (0x100 - len(head))


class SpiFlashController:
    # The SPI flash controller's user-command registers (SPI_USR_REG etc. of esptool's
    # run_spiflash_command) in front of the flash chip.
    def __init__(self, layout, flash_size):
        (
            self.base,
            self.usr,
            self.usr1,
            self.usr2,
            self.mosi_dlen,
            self.miso_dlen,
            self.w0,
            self.addr_msb,
        ) = layout
        self.size_id = max(flash_size, 1).bit_length() - 1
        self.regs = {}
        self.sfdp = sfdp_table()

    def owns(self, addr):
        return self.base <= addr < self.base + 0x100

    def read(self, addr):
        return self.regs.get(addr, 0)

    def write(self, addr, value):
        if addr == self.base and value & (1 << 18):  # SPI_CMD_REG, SPI_CMD_USR: run it
            self._run()
            value &= ~(1 << 18)  # done at once
        self.regs[addr] = value

    def _run(self):
        usr = self.read(self.base + self.usr)
        cmd = self.read(self.base + self.usr2) & 0xFFFF
        addr_len = ((self.read(self.base + self.usr1) >> 26) & 0x3F) + 1 if usr & (1 << 30) else 0
        addr = self.read(self.base + 4)
        if addr_len and self.addr_msb:
            addr >>= 32 - addr_len
        miso_bits = self.read(self.base + self.miso_dlen) + 1 if usr & (1 << 28) else 0
        nbytes = (miso_bits + 7) // 8
        if cmd == 0x9F:  # RDID: manufacturer, memory type, capacity
            reply = bytes([FLASH_MFR, FLASH_TYPE, self.size_id])
        elif cmd == 0x5A:  # RDSFDP
            reply = self.sfdp[addr % 0x100 :][:nbytes]
        else:  # RDSR/RDSR2/RDSR3 read 0 (not busy, nothing protected); others return nothing
            reply = b""
        reply = (reply + b"\x00" * 4)[: min(nbytes, 4)]
        self.regs[self.base + self.w0] = int.from_bytes(reply.ljust(4, b"\x00"), "little")


# ---- the loader ----


class Loader:
    """The chip in download mode. `send(bytes)` puts bytes on the serial line; `boot()` is
    called when the loader hands over to the flash (FLASH_END, RUN_USER_CODE); feed() takes the
    bytes the host sends."""

    def __init__(self, path, chip, chip_rev, mac, send, boot, host_baud=None):
        self.path = path
        self.chip = chips.get(chip)
        self.chip_rev = chip_rev
        self.mac = bytes(mac)
        self.send_raw = send
        self.boot = boot
        # the UART's rate: the ROM measures the host's during SYNC; CHANGE_BAUDRATE sets it
        self.host_baud = host_baud or (lambda: 115200)
        self.baud = self.host_baud()
        self.flash = Flash(path)
        self.layout = CHIP_REGS[self.chip.name]
        self.spi = SpiFlashController(self.layout.spi, self.flash.size)
        self.mem = dict(self.layout.efuse(chip_rev, self.mac))
        self.mem[0x40001000] = self.layout.magic
        self.stub = False
        self.decoder = SlipDecoder()
        self.write = None  # the FLASH_BEGIN / FLASH_DEFL_BEGIN in progress
        self.ram = None  # the MEM_BEGIN in progress
        self.ram_segments = []  # (address, bytes) uploaded
        self.reading = None  # the stub's READ_FLASH in progress
        self.closed = False

    def close(self):
        if not self.closed:
            self.closed = True
            self.flash.close()

    # -- output --

    def send(self, payload):
        self.send_raw(slip_encode(payload))

    def respond(self, op, value=0, data=b"", error=None):
        # error: None for success; a ROM error byte, or a stub response code
        if self.stub:
            code = 0 if error is None else error
            body = data + struct.pack(">H", code)
        else:
            body = data + (bytes([0, 0, 0, 0]) if error is None else bytes([1, error, 0, 0]))
        self.send(struct.pack("<BBHI", 1, op, len(body), value) + body)

    # -- input --

    def feed(self, data):
        for frame in self.decoder.feed(data):
            if self.closed:
                return
            if self.reading is not None:
                self._read_ack(frame)
                continue
            self.command(frame)

    def command(self, frame):
        if len(frame) < 8 or frame[0] != 0:
            return  # not a request: the chip ignores it
        op, size, chk = struct.unpack_from("<BHI", frame, 1)
        data = frame[8:]
        if len(data) != size:
            self.respond(op, error=STUB_BAD_DATA_LEN if self.stub else ROM_BAD_MESSAGE)
            return
        handler = self.HANDLERS.get(op)
        if handler is None or (op >= 0xD0 if not self.stub else op == READ_FLASH_SLOW):
            if self.stub:
                self.respond(op, error=STUB_INVALID_COMMAND)
            else:
                self.respond(op, error=ROM_BAD_MESSAGE)
            return
        handler(self, op, data, chk)

    # -- the commands --

    def _bad_len(self, op):
        self.respond(op, error=STUB_BAD_DATA_LEN if self.stub else ROM_BAD_MESSAGE)

    def _sync(self, op, data, chk):
        if data != SYNC_DATA:
            self._bad_len(op)
            return
        self.baud = self.host_baud()
        value = 0 if self.stub else SYNC_VALUE
        for _ in range(8):
            self.respond(op, value)

    def _read_reg(self, op, data, chk):
        if len(data) != 4:
            self._bad_len(op)
            return
        self.respond(op, self.read_reg(struct.unpack("<I", data)[0]))

    def read_reg(self, addr):
        if self.spi.owns(addr):
            return self.spi.read(addr)
        if addr == self.layout.clkdiv:
            return XTAL_HZ // max(self.baud, 1)
        return self.mem.get(addr, 0)

    def _write_reg(self, op, data, chk):
        if not data or len(data) % 16:
            self._bad_len(op)
            return
        for i in range(0, len(data), 16):
            addr, value, mask, _delay = struct.unpack_from("<IIII", data, i)
            old = self.read_reg(addr)
            value = (value & mask) | (old & ~mask & 0xFFFFFFFF)
            if self.spi.owns(addr):
                self.spi.write(addr, value)
            else:
                self.mem[addr] = value
        self.respond(op)

    def _security_info(self, op, data, chk):
        n = self.layout.secinfo
        if n == 0:  # the ESP32 ROM does not know the command
            if self.stub:
                self.respond(op, error=STUB_CMD_NOT_IMPLEMENTED)
            else:
                self.respond(op, error=ROM_BAD_MESSAGE)
            return
        # flags 0 (no secure boot, no secure download mode), flash_crypt_cnt 0, key purposes 0;
        # from the S3 on, the chip id and the ROM's API version
        info = struct.pack("<IB7B", 0, 0, *([0] * 7))
        if n == 20:
            info += struct.pack("<II", self.chip.chip_id, self.chip_rev // 100)
        self.respond(op, data=info)

    def _spi_attach(self, op, data, chk):
        if len(data) != (4 if self.stub else 8):
            self._bad_len(op)
            return
        self.respond(op)

    def _spi_set_params(self, op, data, chk):
        if len(data) != 24:
            self._bad_len(op)
            return
        self.respond(op)

    def _change_baud(self, op, data, chk):
        if len(data) != 8:
            self._bad_len(op)
            return
        self.respond(op)
        self.baud = struct.unpack_from("<I", data)[0] or self.baud

    # flash writes

    def _flash_begin(self, op, data, chk):
        extended = not self.stub and self.chip.name == "esp32"
        if len(data) not in ((16,) if extended else (16, 20)):
            self._bad_len(op)
            return
        size, blocks, blocksize, offset = struct.unpack_from("<IIII", data)
        compressed = op == FLASH_DEFL_BEGIN
        end = offset + size
        if offset > self.flash.size or (size and end > self.flash.size):
            self.respond(op, error=STUB_FAILED_SPI_OP if self.stub else ROM_INVALID_PARAM)
            return
        w = {
            "offset": offset,
            "pos": offset,
            "blocksize": blocksize,
            "blocks": blocks,
            "remaining": size,
            "erased_to": offset - offset % SECTOR,
            "erase_end": -(-end // SECTOR) * SECTOR,
            "z": zlib.decompressobj() if compressed else None,
            "compressed": compressed,
        }
        if not self.stub and size:
            # the ROM erases the whole region up front (the erase size is rounded up to sectors)
            self._erase_to(w, w["erase_end"])
        self.write = w
        self.respond(op)

    def _erase_to(self, w, addr):
        addr = min(-(-addr // SECTOR) * SECTOR, w["erase_end"], self.flash.size)
        if addr > w["erased_to"]:
            self.flash.erase_region(w["erased_to"], addr - w["erased_to"])
            w["erased_to"] = addr

    def _program(self, w, addr, chunk):
        # bytes past the end of the flash chip are 0xFF padding: nothing to program there
        chunk = chunk[: max(0, self.flash.size - addr)]
        if chunk:
            self._erase_to(w, addr + len(chunk))
            self.flash.program(addr, chunk)

    def _data_header(self, op, data, chk):
        # (payload, seq) of a _DATA command, or None after answering an error
        if len(data) < 16:
            self.respond(op, error=STUB_NOT_ENOUGH_DATA if self.stub else ROM_BAD_MESSAGE)
            return None
        n, seq = struct.unpack_from("<II", data)
        payload = data[16:]
        if n != len(payload):
            self.respond(op, error=STUB_TOO_MUCH_DATA if self.stub else ROM_BAD_MESSAGE)
            return None
        c = 0xEF
        for b in payload:
            c ^= b
        if c != chk & 0xFF:
            self.respond(op, error=STUB_BAD_DATA_CHECKSUM if self.stub else ROM_CHECKSUM)
            return None
        return payload, seq

    def _flash_data(self, op, data, chk):
        w = self.write
        if w is None or w["compressed"] != (op == FLASH_DEFL_DATA):
            self.respond(op, error=STUB_NOT_IN_FLASH_MODE if self.stub else ROM_RESULT_WRONG)
            return
        got = self._data_header(op, data, chk)
        if got is None:
            return
        payload, seq = got
        if w["compressed"]:
            try:
                out = w["z"].decompress(payload)
            except zlib.error:
                self.respond(op, error=STUB_INFLATE_ERROR if self.stub else ROM_DEFLATE)
                return
            if self.stub:
                out = out[: w["remaining"]]
            self._program(w, w["pos"], out)
            w["pos"] += len(out)
            w["remaining"] = max(0, w["remaining"] - len(out))
        elif self.stub:
            out = payload[: w["remaining"]]
            self._program(w, w["pos"], out)
            w["pos"] += len(out)
            w["remaining"] -= len(out)
        else:
            # the ROM writes each block, padding included, where its sequence number puts it
            self._program(w, w["offset"] + seq * w["blocksize"], payload)
        self.respond(op)

    def _flash_end(self, op, data, chk):
        if len(data) != 4:
            self._bad_len(op)
            return
        w = self.write
        if self.stub:
            if w is None:
                self.respond(op, error=STUB_NOT_IN_FLASH_MODE)
                return
            if w["remaining"]:
                self.respond(op, error=STUB_BAD_DATA_LEN)
                return
            self.write = None
            self.respond(op)
            return  # the stub does not reboot (esp-flasher-stub: "TODO: Implement reboot")
        self.write = None
        self.respond(op)
        # the ROM leaves download mode: reboot (0) or run the code in flash (1); either way
        # the app in flash starts
        self.boot()

    def _md5(self, op, data, chk):
        if len(data) != 16:
            self._bad_len(op)
            return
        addr, size = struct.unpack_from("<II", data)
        if addr + size > self.flash.size:
            self.respond(op, error=STUB_FAILED_SPI_OP if self.stub else ROM_INVALID_PARAM)
            return
        h = hashlib.md5()
        pos = addr
        while pos < addr + size:
            n = min(0x10000, addr + size - pos)
            h.update(self.flash.read(pos, n))
            pos += n
        # the ROM sends the digest as 32 hex characters, the stub as 16 bytes
        self.respond(op, data=h.digest() if self.stub else h.hexdigest().encode())

    def _read_flash_slow(self, op, data, chk):
        if len(data) != 8:
            self._bad_len(op)
            return
        addr, size = struct.unpack_from("<II", data)
        if size > 64 or addr + size > self.flash.size:
            self.respond(op, error=ROM_FLASH_READ_LEN)
            return
        # always a 64-byte buffer, whatever was asked (esptool's read_flash_slow)
        self.respond(op, data=self.flash.read(addr, size).ljust(64, b"\xff"))

    # the stub's own commands

    def _erase_flash(self, op, data, chk):
        self.flash.erase_region(0, self.flash.size - self.flash.size % SECTOR)
        self.respond(op)

    def _erase_region(self, op, data, chk):
        if len(data) != 8:
            self._bad_len(op)
            return
        addr, size = struct.unpack_from("<II", data)
        if addr % SECTOR or size % SECTOR or addr + size > self.flash.size:
            self.respond(op, error=STUB_BAD_DATA_LEN)
            return
        self.flash.erase_region(addr, size)
        self.respond(op)

    def _read_flash(self, op, data, chk):
        if len(data) != 16:
            self._bad_len(op)
            return
        addr, size, packet, _inflight = struct.unpack_from("<IIII", data)
        if packet == 0 or packet > 4096 or addr + size > self.flash.size:
            self.respond(op, error=STUB_BAD_DATA_LEN)
            return
        self.respond(op)
        # one packet at a time, each acknowledged by the host with the byte count it has
        # (esp-flasher-stub keeps one packet in flight), then the MD5 of it all
        self.reading = {"pos": addr, "end": addr + size, "packet": packet, "md5": hashlib.md5()}
        self._read_next()

    def _read_next(self):
        r = self.reading
        if r["pos"] >= r["end"]:
            self.reading = None
            self.send(r["md5"].digest())
            return
        n = min(r["packet"], r["end"] - r["pos"])
        chunk = self.flash.read(r["pos"], n)
        r["pos"] += n
        r["md5"].update(chunk)
        self.send(chunk)

    def _read_ack(self, frame):
        if len(frame) != 4:
            self.reading = None  # the stub stops reading on a frame that is not an ack
            return
        self._read_next()

    def _run_user_code(self, op, data, chk):
        # no response: the stub returns to the ROM, which boots from flash
        self.boot()

    # RAM download (the stub upload)

    def _mem_begin(self, op, data, chk):
        if len(data) != 16:
            self._bad_len(op)
            return
        size, blocks, blocksize, addr = struct.unpack_from("<IIII", data)
        self.ram = {"addr": addr, "left": size, "data": bytearray()}
        self.respond(op)

    def _mem_data(self, op, data, chk):
        if self.ram is None:
            self.respond(op, error=STUB_NOT_IN_FLASH_MODE if self.stub else ROM_RESULT_WRONG)
            return
        got = self._data_header(op, data, chk)
        if got is None:
            return
        payload, _seq = got
        if len(payload) > self.ram["left"]:
            self.respond(op, error=STUB_TOO_MUCH_DATA if self.stub else ROM_INVALID_PARAM)
            return
        self.ram["data"] += payload
        self.ram["left"] -= len(payload)
        self.respond(op)

    def _mem_end(self, op, data, chk):
        if len(data) != 8:
            self._bad_len(op)
            return
        if self.ram is not None:
            self.ram_segments.append((self.ram["addr"], bytes(self.ram["data"])))
            self.ram = None
        no_run, entry = struct.unpack_from("<II", data)
        self.respond(op)
        if no_run == 0 and entry:
            # The uploaded code is not executed: the board goes on answering as esptool's
            # flasher stub does, from its greeting on.
            self.stub = True
            self.write = None
            self.send(b"OHAI")

    HANDLERS = {
        SYNC: _sync,
        READ_REG: _read_reg,
        WRITE_REG: _write_reg,
        GET_SECURITY_INFO: _security_info,
        SPI_ATTACH: _spi_attach,
        SPI_SET_PARAMS: _spi_set_params,
        CHANGE_BAUDRATE: _change_baud,
        FLASH_BEGIN: _flash_begin,
        FLASH_DATA: _flash_data,
        FLASH_END: _flash_end,
        FLASH_DEFL_BEGIN: _flash_begin,
        FLASH_DEFL_DATA: _flash_data,
        FLASH_DEFL_END: _flash_end,
        SPI_FLASH_MD5: _md5,
        READ_FLASH_SLOW: _read_flash_slow,
        MEM_BEGIN: _mem_begin,
        MEM_DATA: _mem_data,
        MEM_END: _mem_end,
        ERASE_FLASH: _erase_flash,
        ERASE_REGION: _erase_region,
        READ_FLASH: _read_flash,
        RUN_USER_CODE: _run_user_code,
    }

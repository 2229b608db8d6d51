"""Real ESP32 images for tests and the simulator, built with esptool's image classes.

An app image is what MicroPython's esp32 port gets from ESP-IDF's build and esptool's
`elf2image`: the 24-byte header with the chip id, then the ELF's segments as `elf2image` lays them
out (`ESP32FirmwareImage.save()`): flash-mapped DROM first (its first bytes are the 256-byte
`esp_app_desc_t`), RAM segments split to fill the gap up to the next 64 KB MMU page (or, where
they run out, esptool's padding segments at load address 0), flash-mapped IROM, what is left of
the RAM segments, the XOR checksum and the appended SHA-256.

As MicroPython builds it (ports/esp32/boards/sdkconfig.base: CONFIG_APP_EXCLUDE_PROJECT_VER_VAR
and CONFIG_APP_EXCLUDE_PROJECT_NAME_VAR), `esp_app_desc_t.version` and `project_name` are empty;
MicroPython's own version is in the rodata (DROM) as the C compiler lays out its string
constants: the REPL banner `MicroPython v1.28.0 on 2026-04-06` (shared/runtime/pyexec.c, with
py/modsys.c's `sys.version` and extmod/modos.c's `os.uname().version` as its tail) and
separately `; ESP32C3 module with ESP32C3` (MICROPY_HW_BOARD_NAME " with " MICROPY_HW_MCU_NAME),
each NUL-terminated and 4-byte aligned. The rest of each segment is pseudo-random bytes derived
from the arguments, so that two builds differ everywhere.
"""

from __future__ import annotations

import datetime
import hashlib
import random
import struct

from esptool.bin_image import (
    ELFSection,
    ESP32C2FirmwareImage,
    ESP32C3FirmwareImage,
    ESP32C5FirmwareImage,
    ESP32C6FirmwareImage,
    ESP32FirmwareImage,
    ESP32P4FirmwareImage,
    ESP32S2FirmwareImage,
    ESP32S3FirmwareImage,
)

IMAGE_CLASSES = {
    "esp32": ESP32FirmwareImage,
    "esp32s2": ESP32S2FirmwareImage,
    "esp32s3": ESP32S3FirmwareImage,
    "esp32c2": ESP32C2FirmwareImage,
    "esp32c3": ESP32C3FirmwareImage,
    "esp32c5": ESP32C5FirmwareImage,
    "esp32c6": ESP32C6FirmwareImage,
    "esp32p4": ESP32P4FirmwareImage,
}

APP_DESC_MAGIC = 0xABCD5432
BOOTLOADER_DESC_MAGIC = 0x50
SEED_IMAGE_SIZE = 1525536  # the seed README's micropython.bin: 372 blocks + 1824 bytes
MMU_PAGE = 0x10000


class Chip:
    """How an ESP-IDF v5.5 build of MicroPython's ESP32_GENERIC* board lays out an app for a
    chip. Addresses: ESP-IDF components/soc/<chip>/include/soc/soc.h and esptool's targets;
    board and MCU names: MicroPython v1.28.0 ports/esp32/boards/<board>/mpconfigboard.h.

    iram: where .iram0.text starts; i_d: SOC_I_D_OFFSET (IRAM alias minus DRAM address of the
    shared D/IRAM, 0 where both buses see one address), DRAM data following the IRAM there;
    dram: a fixed .dram0.data address (ESP32); shared_vaddr: DROM's virtual addresses follow the
    IROM's in one MMU space (rodata placed after text), as on all chips after the S2; rtc:
    (address, length) of the RTC/LP memory segments; sizes: DROM, DRAM, IRAM, IROM, of a
    v1.2x release (about 1.2-1.45 MB, so that it fits a 1.5 MB OTA slot)."""

    def __init__(self, name, board, mcu, build, iram, i_d, dram, shared_vaddr, rtc, sizes, rev):
        self.name, self.board, self.mcu, self.build = name, board, mcu, build
        self.iram, self.i_d, self.dram = iram, i_d, dram
        self.shared_vaddr, self.rtc, self.sizes = shared_vaddr, rtc, sizes
        self.min_rev, self.max_rev = rev
        self.cls = IMAGE_CLASSES[name]
        self.rom = self.cls.ROM_LOADER


CHIPS = {
    c.name: c
    for c in (
        Chip("esp32", "Generic ESP32 module", "ESP32", "ESP32_GENERIC",
             0x40080000, None, 0x3FFBDB60, False,
             [(0x400C0000, 0x64), (0x50000000, 0x10)],
             (0x3A1C0, 0x4B6C, 0x1A5F4, 0x10E4A8), (0, 399)),
        Chip("esp32s2", "Generic ESP32S2 module", "ESP32S2", "ESP32_GENERIC_S2",
             0x40024000, 0x70000, None, False,
             [(0x40070000, 0x5C), (0x50000000, 0x10)],
             (0x35A40, 0x2B10, 0x13C80, 0xF1E24), (0, 199)),
        Chip("esp32s3", "Generic ESP32S3 module", "ESP32S3", "ESP32_GENERIC_S3",
             0x40374000, 0x6F0000, None, True,
             [(0x600FE000, 0x6C), (0x50000000, 0x10)],
             (0x3C7E4, 0x3A2C, 0x16F00, 0xF8C6C), (0, 99)),
        Chip("esp32c2", "ESP32C2 module", "ESP32C2", "ESP32_GENERIC_C2",
             0x40380000, 0x6E0000, None, True, [],
             (0x2E9A8, 0x11D4, 0xE3E8, 0xCB5F0), (100, 299)),
        Chip("esp32c3", "ESP32C3 module", "ESP32C3", "ESP32_GENERIC_C3",
             0x40380000, 0x700000, None, True,
             [(0x50000000, 0x14), (0x5000081C, 0x20)],
             (0x33D94, 0x155C, 0x10C24, 0xDCF94), (3, 199)),
        Chip("esp32c5", "ESP32C5 module", "ESP32C5", "ESP32_GENERIC_C5",
             0x40800000, 0, None, True, [(0x50000000, 0x18)],
             (0x35C10, 0x1A40, 0x14A38, 0xE8B5C), (100, 199)),
        Chip("esp32c6", "ESP32C6 module", "ESP32C6", "ESP32_GENERIC_C6",
             0x40800000, 0, None, True, [(0x50000000, 0x18)],
             (0x3570C, 0x19E8, 0x143F0, 0xE6A10), (0, 99)),
        Chip("esp32p4", "Generic ESP32P4 module", "ESP32P4", "ESP32_GENERIC_P4",
             0x4FF00000, 0, None, True, [(0x50108000, 0x18)],
             (0x39A28, 0x2E84, 0x1B2C4, 0xF9E0C), (1, 199)),
    )
}  # fmt: skip


def banner(version: str, date: str) -> str:
    """MICROPY_BANNER_NAME_AND_VERSION (py/mpconfig.h): the REPL's first line, up to ';'."""
    return f"MicroPython {version} on {date}"


def machine(chip: str, board: str | None = None) -> str:
    """MICROPY_BANNER_MACHINE, os.uname().machine: MICROPY_HW_BOARD_NAME " with " MCU_NAME."""
    c = CHIPS[chip]
    return f"{board or c.board} with {c.mcu}"


def release(version: str) -> str:
    """os.uname().release, MICROPY_VERSION_STRING: "1.28.0" (a preview: "1.28.0-preview")."""
    v = version.lstrip("v").split("-")
    return v[0] + ("-preview" if len(v) > 1 and v[1].startswith("preview") else "")


def _code(rng: random.Random, n: int) -> bytes:
    """n bytes that compress about as well as firmware does (zlib: ~60%): random 64-byte
    blocks mixed with blocks repeated from a small vocabulary."""
    vocab = [rng.randbytes(64) for _ in range(64)]
    out = bytearray()
    while len(out) < n:
        out += rng.randbytes(64) if rng.random() < 0.55 else vocab[rng.randrange(64)]
    return bytes(out[:n])


def _cstr(*strings: str) -> bytes:
    """String constants as the compiler puts them in .rodata: NUL-terminated, 4-byte aligned."""
    out = b""
    for s in strings:
        b = s.encode() + b"\0"
        out += b + bytes(-len(b) % 4)
    return out


def _rodata(version, date, chip, board, idf_ver):
    """The rodata strings that name the firmware, in the order the reference build has them:
    the panic handler's message (ports/esp32/panichandler.c), the REPL help
    (ports/esp32/help.c), os.uname()'s machine and release (extmod/modos.c), the REPL banner
    pair (shared/runtime/pyexec.c; os.uname().version is its tail), sys.version (py/modsys.c)."""
    m = machine(chip, board)
    panic = (
        "\r\nA fatal error occurred. The crash dump printed below may be used to help\r\n"
        "determine what caused it. If you are not already running the most recent\r\n"
        "version of MicroPython, consider upgrading. New versions often fix bugs.\r\n\r\n"
        "To learn more about how to debug and/or report this crash visit the wiki\r\n"
        "page at: https://github.com/micropython/micropython/wiki/ESP32-debugging\r\n\r\n"
        f"MPY version : {version} on {date}\r\nIDF version : {idf_ver}\r\n"
        f"Machine     : {m}\r\n\r\n"
    )
    return [
        _cstr(panic),
        _cstr("Welcome to MicroPython on the ESP32!\n\nFor online docs please visit "
              "http://docs.micropython.org/\n"),
        _cstr(m, release(version)),
        _cstr(banner(version, date), "; " + m),
        _cstr(CHIPS[chip].build, "3.4.0; " + banner(version, date)),
    ]  # fmt: skip


def app_desc(
    version: str,
    project: str = "",
    idf_ver: str = "v5.5.2",
    date: str = "Apr  6 2026",
    time: str = "13:12:49",
    secure_version: int = 0,
    elf_sha256: bytes = b"",
) -> bytes:
    """`esp_app_desc_t` (components/esp_app_format/include/esp_app_desc.h), 256 bytes, as
    esp_app_desc.c fills it: version/project_name (empty in MicroPython's builds), __TIME__,
    __DATE__, IDF_VER, the ELF's SHA-256, efuse block revisions 0.0-1.99, MMU page 2^16."""

    def field(s: str, n: int) -> bytes:
        b = s.encode()[: n - 1]
        return b + b"\x00" * (n - len(b))

    d = struct.pack("<II8x", APP_DESC_MAGIC, secure_version)
    d += field(version, 32) + field(project, 32) + field(time, 16) + field(date, 16)
    d += field(idf_ver, 32) + (elf_sha256 or bytes(32))[:32]
    d += struct.pack("<HHBB", 0, 199, 16, 0)
    return d + bytes(256 - len(d))


def _image(chip: str, digest: bool = True):
    cls = IMAGE_CLASSES[chip]
    img = cls()
    img.flash_mode = 2  # DIO
    freq = cls.ROM_LOADER.FLASH_FREQUENCY
    f = freq["40m"] if chip == "esp32" else freq.get("80m", freq.get("60m", 0))
    img.flash_size_freq = 0x20 | f  # 4MB
    img.append_digest = digest
    img.min_rev_full = 0
    img.max_rev_full = 399
    return img


def _up(n: int, a: int) -> int:
    return (n + a - 1) // a * a


def _rodata_segment(rng, desc, strings, n, size):
    """DROM of n bytes: the app description, then pseudo-random rodata with each string block
    at a 4-aligned offset, in order, spread over it."""
    drom = bytearray(_code(rng, n - 256))
    if len(drom) < sum(map(len, strings)) + 64:
        raise ValueError(f"cannot build an app image of {size} bytes: too small")
    room = len(drom) - sum(map(len, strings))
    cuts = sorted(rng.randrange(room) // 4 * 4 for _ in strings)
    pos = 0
    prev = 0
    out = bytearray()
    for cut, blk in zip(cuts, strings, strict=True):
        out += drom[prev : prev + cut - pos] + blk
        prev += cut - pos
        pos = cut
    out += drom[prev : prev + room - pos]
    return desc + bytes(out)


def app_image(
    version: str = "v1.24.0",
    size: int | None = None,
    chip: str = "esp32",
    project_version: str = "",
    board: str | None = None,
    date: str | None = None,
    build: int = 0,
    idf_ver: str = "v5.5.2",
    digest: bool = True,
    secure_version: int = 0,
    code: bytes | None = None,
    rodata: bytes | None = None,
    seed: str | None = None,
) -> bytes:
    """A bootable app image of MicroPython `version` (its git tag or `git describe`) for `chip`,
    as MicroPython's esp32 port builds it. `size` (bytes, a multiple of 16) gives its exact
    length; `project_version` is esp_app_desc_t.version, set only by custom builds with
    PROJECT_VER; `board` replaces MICROPY_HW_BOARD_NAME; `date` is MICROPY_BUILD_DATE
    (YYYY-MM-DD, default: derived from the version); `build` seeds what differs between two
    builds of the same source (app_elf_sha256, section sizes); `digest=False` leaves out the
    appended SHA-256 (hash_appended = 0).

    `code` (machine code, e.g. a real build's .text) is the flash-mapped code segment (IROM)
    as it is, and `rodata` follows the firmware's strings in DROM as it is, in place of the
    pseudo-random bytes (the image's length then follows from them: no `size`); app_elf_sha256
    is then a hash of both. `seed` replaces what the rest of the image (the RAM segments, build
    time) is derived from, so that two images made with one seed differ only where their
    version, code and rodata do."""
    if chip not in CHIPS:
        raise ValueError(f"unknown chip {chip!r} (one of {', '.join(CHIPS)})")
    if code is not None and size is not None:
        raise ValueError("give either the code or the size of the image, not both")
    c = CHIPS[chip]
    rng = random.Random(
        seed or f"{version} {chip} {project_version} {board} {date} {build} {idf_ver}"
    )
    if date is None:
        # A stable date per version: 2024-01-01 plus a day per minor and micro release.
        nums = [int(x) for x in release(version).split("-")[0].split(".")[:3] if x.isdigit()]
        nums += [0] * (3 - len(nums))
        day = datetime.date(2020, 1, 1) + datetime.timedelta(nums[1] * 60 + nums[2] * 7)
        date = day.isoformat()
    d = datetime.date.fromisoformat(date)
    cdate = f"{d.strftime('%b')} {d.day:2d} {d.year}"  # __DATE__
    ctime = "%02d:%02d:%02d" % (rng.randrange(24), rng.randrange(60), rng.randrange(60))
    elf_sha256 = rng.randbytes(32)
    if code is not None or rodata is not None:
        elf_sha256 = hashlib.sha256((code or b"") + (rodata or b"")).digest()
    desc = app_desc(project_version, "", idf_ver, cdate, ctime, secure_version, elf_sha256)
    jitter = [rng.randrange(-0x800, 0x800) // 4 * 4 for _ in range(4)]
    drom_n, dram_n, iram_n, irom_n = (max(64, n + j) for n, j in zip(c.sizes, jitter, strict=True))
    default_total = drom_n + dram_n + iram_n + irom_n
    small = False
    if size is not None and size < default_total:
        scale = size / default_total
        drom_n = max(4096, int(drom_n * scale) // 4 * 4)
        dram_n = max(256, int(dram_n * scale) // 4 * 4)
        iram_n = max(1024, int(iram_n * scale) // 4 * 4)
        small = size < MMU_PAGE + 0x3000  # no room for IROM on the second MMU page

    strings = _rodata(version, date, chip, board, idf_ver)
    if rodata is not None:  # the firmware's strings, then the given rodata as it is
        drom = desc + b"".join(strings) + rodata + bytes(-len(rodata) % 4)
    else:
        drom = _rodata_segment(rng, desc, strings, drom_n, size)
    dram = _code(rng, dram_n)
    iram = _code(rng, iram_n)
    rtc = [(a, _code(rng, n)) for a, n in c.rtc]
    entry = c.iram + rng.randrange(0x100, 0x800) // 4 * 4
    if c.dram is not None:
        dram_addr = c.dram
    else:
        dram_addr = _up(c.iram + iram_n, 0x200) - c.i_d

    grow = irom_n if size is None else max(4, size - (drom_n + dram_n + iram_n)) // 4 * 4
    if small:
        grow = max(4, size - drom_n - dram_n - 0x200) // 4 * 4
    if code is not None:
        fill = code + bytes(-len(code) % 4)
        grow = len(fill)
    else:
        fill = _code(rng, grow + 2 * MMU_PAGE)

    def build_image(n: int) -> bytes:
        img = _image(chip, digest)
        img.min_rev_full, img.max_rev_full = c.min_rev, c.max_rev
        img.min_rev = c.min_rev // 100 if chip == "esp32" else c.min_rev
        img.entrypoint = entry
        irom_addr = c.rom.IROM_MAP_START + 0x20
        if c.shared_vaddr:  # rodata after the text, in the same virtual address space
            # (C5, C6, P4: one window for both, SOC_DROM_LOW == SOC_IROM_LOW)
            base = c.rom.DROM_MAP_START
            if base > c.rom.IROM_MAP_START or c.name in ("esp32c5", "esp32c6", "esp32p4"):
                base = c.rom.IROM_MAP_START
            drom_addr = base + _up(0x20 + n, MMU_PAGE) + 0x20
        else:
            drom_addr = c.rom.DROM_MAP_START + 0x20
        # ".flash.appdesc" goes first however the addresses sort (elf2image's C6 rule).
        segs = [ELFSection(b".flash.appdesc", drom_addr, bytes(drom), 0)]
        segs.append(ELFSection(b".dram0.data", dram_addr, dram, 0))
        if small:
            segs.append(ELFSection(b".iram0.text", c.iram, iram + fill[:n], 0))
        else:
            segs.append(ELFSection(b".iram0.text", c.iram, iram, 0))
            segs.append(ELFSection(b".flash.text", irom_addr, fill[:n], 0))
        segs += [ELFSection(b".rtc.text", a, data, 0) for a, data in rtc]
        img.segments = segs
        return img.save(None)

    out = build_image(grow)
    # The RAM spent filling the gap before IROM moves with the sizes: converge on the size.
    for _ in range(8):
        if size is None or len(out) == size:
            return out
        grow += size - len(out)
        if grow <= 0 or grow % 4 or grow > len(fill):
            break
        out = build_image(grow)
    if len(out) != size:
        raise ValueError(f"cannot build an app image of exactly {size} bytes")
    return out


def bootloader_image(
    chip: str = "esp32", idf_ver: str = "v5.4.2", flash_size: int = 4 << 20
) -> bytes:
    """A 2nd stage bootloader image for `chip`: `esp_bootloader_desc_t` (magic byte 0x50) at
    offset 32 and segments in the bootloader's own RAM (each chip's bootloader.ld: dram_seg,
    iram_loader_seg, iram_seg; espsim.chips), as `idf.py bootloader` makes it, with esptool's
    image class for the chip; about 23 KB, so that it fits before the partition table from
    0x1000 and 0x2000 (makeimg.py refuses one that does not). Its header states `flash_size`
    (CONFIG_ESPTOOLPY_FLASHSIZE), the size the bootloader checks the partition table
    against."""
    from espsim import chips
    from esptool import bin_image

    soc = chips.get(chip)
    rng = random.Random(f"bootloader {chip}")
    img = getattr(bin_image, chip.upper() + "FirmwareImage")()
    img.flash_mode = 2  # DIO
    # 40MHz (0) and the flash size code, 1MB = 0 ... 16MB = 0x40 (esptool's FLASH_SIZES)
    img.flash_size_freq = img.ROM_LOADER.FLASH_SIZES[f"{flash_size >> 20}MB"]
    img.min_rev_full = soc.rev_min_full
    img.max_rev_full = soc.rev_max_full
    desc = struct.pack("<B3xI", BOOTLOADER_DESC_MAGIC, 1)
    desc += idf_ver.encode().ljust(32, b"\x00") + b"Nov 27 2026 12:00:00".ljust(24, b"\x00")
    desc += bytes(16)
    # ESP32: .dram0.bootdesc follows 0x30 bytes of .dram0.bss at the start of dram_seg
    dram = soc.bl_dram[0] + (0x30 if chip == "esp32" else 0)
    img.entrypoint = soc.bl_iram[0]
    img.segments = [
        ELFSection(b".dram0.bootdesc", dram, desc + rng.randbytes(0x1000), 0),
        ELFSection(b".iram_loader.text", soc.bl_loader_iram[0], rng.randbytes(0x2C00), 0),
        ELFSection(b".iram.text", soc.bl_iram[0], rng.randbytes(0x1C00), 0),
    ]
    return img.save(None)


def merged_firmware(app: bytes, table: bytes, bootloader: bytes | None = None) -> bytes:
    """MicroPython's esp32 `firmware.bin` (ports/esp32/makeimg.py): bootloader, partition table
    and app in one file, flashed where the app's chip looks for the bootloader (0x1000 on ESP32
    and S2, 0 on S3 and C3, ...: CONFIG_BOOTLOADER_OFFSET_IN_FLASH)."""
    from espsim import chips

    soc = chips.BY_ID[int.from_bytes(app[12:14], "little")]
    bootloader = bootloader or bootloader_image(soc.name)
    at = soc.bootloader_offset
    if len(bootloader) > 0x8000 - at:
        raise ValueError(f"bootloader ({len(bootloader)} bytes) overflows 0x{at:x}-0x8000")
    out = bytearray(b"\xff" * (0x10000 - at))
    out[: len(bootloader)] = bootloader
    out[0x8000 - at : 0x8000 - at + len(table)] = table
    return bytes(out) + app


# MicroPython's stock partition tables (ports/esp32/partitions-*.csv, v1.24.0 and v1.28.0), as
# its ESP32_GENERIC* boards use them: up to v1.25, partitions-4MiB.csv (a 2 MB vfs) and, on the
# S3, partitions-8MiB.csv (a 6 MB vfs, header 8 MB); from v1.26 (commit 2a0e2b57) every one of
# them uses partitions-4MiBplus.csv, with no vfs row (main.c registers one at boot, from the
# table's end to the physical end of flash), its header 4 MB.
_STOCK_ROWS = (
    "nvs,      data, nvs,     0x9000,  0x6000,\n"
    "phy_init, data, phy,     0xf000,  0x1000,\n"
    "factory,  app,  factory, 0x10000, 0x1F0000,\n"
)
STOCK_CHIPS = ("esp32", "esp32s2", "esp32s3", "esp32c3", "esp32c6")


def stock_table(chip: str, version: str) -> tuple[str, str, int]:
    """(file name, CSV text, bootloader header's flash size) of the partition table that
    MicroPython's stock download for `chip` at `version` (v1.24.0, v1.26.0-preview...) has."""
    import re

    if chip not in STOCK_CHIPS:
        raise ValueError(
            f"no stock MicroPython table known for {chip} (only for {', '.join(STOCK_CHIPS)})"
        )
    m = re.match(r"v?(\d+)\.(\d+)", version)
    if not m:
        raise ValueError(f"not a MicroPython version: {version!r}")
    if (int(m.group(1)), int(m.group(2))) >= (1, 26):
        return "partitions-4MiBplus.csv", _STOCK_ROWS, 4 << 20
    if chip == "esp32s3":
        return "partitions-8MiB.csv", _STOCK_ROWS + _vfs(0x600000), 8 << 20
    return "partitions-4MiB.csv", _STOCK_ROWS + _vfs(0x200000), 4 << 20


def _vfs(size: int) -> str:
    return f"vfs,      data, fat,     0x200000, 0x{size:X},\n"


def stock_firmware(app: bytes, chip: str, version: str) -> tuple[bytes, str]:
    """The merged `.bin` that micropython.org publishes for the board (makeimg.py: bootloader,
    the stock table of `stock_table()`, the app), from the chip's bootloader offset; and the
    table's file name."""
    from esp_idf_defs import PartitionTable

    name, csv, header = stock_table(chip, version)
    table = PartitionTable.from_csv(csv).to_binary()
    if len(app) > 0x1F0000:
        raise ValueError(f"the app ({len(app)} bytes) does not fit the stock factory (0x1F0000)")
    return merged_firmware(app, table, bootloader_image(chip, flash_size=header)), name

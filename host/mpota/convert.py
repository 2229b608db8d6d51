"""mpota convert: a stock MicroPython firmware for ESP32 made OTA-capable, from a file.

Input: the merged `.bin` MicroPython publishes for a board (ports/esp32/makeimg.py: the file
starts at the chip's bootloader offset, 0x1000 on ESP32/S2, 0x2000 on C5/P4, else 0; partition
table at 0x8000; app at 0x10000; 0xFF between), or the `.app-bin` (the app alone) with the chip
and flash size. Output: one image in which

- ota_0 starts at 0x10000, so the app's bytes do not move; ota_1 follows, of the same size;
- nvs 0x9000/0x4000, otadata 0xD000/0x2000 (blank: with no valid otadata entry the bootloader
  boots ota_0), phy_init 0xF000/0x1000: the rows of MicroPython's own partitions-4MiB-ota.csv;
- the filesystem follows ota_1: a "vfs" row to the end of flash when the stock table had one
  (MicroPython up to v1.25); none when it had none (v1.26+: main.c registers a "vfs" at boot
  from the table's end to the physical end of flash);
- the table is what esp-idf-defs (ESP-IDF's gen_esp32part) makes from the CSV `convert` prints;
- the bootloader header's flash size is raised only when the new table ends past it (the
  bootloader refuses a partition past that size), its SHA-256 recomputed as esptool does;
- the first two 4 KB blocks of the new filesystem are blank (0xFF), so that a board which held a
  filesystem there formats a new one at first boot (inisetup.py) instead of finding a stale
  block and looping in fs_corrupted().

Slot size: max(app, largest stock app of the chip) + 64 KB, rounded up to 64 KB. The largest
stock app (MicroPython v1.24-v1.28 at ESP-IDF 5.x, from the size metrics of MicroPython's pull
requests) makes room for a later stock release; the 64 KB for its growth (ESP32's app grew
about 60 KB from v1.24 to v1.28). On 4 MB that is two 0x1B0000 slots and 576 KB of filesystem
for ESP32, S3, C3; 0x1E0000 slots and 192 KB for C6 (its app is 1.86 MB).
"""

from __future__ import annotations

import hashlib
import io
import os
import re
from pathlib import Path

from esp_idf_defs import PartitionTable
from esp_idf_defs.partitions import InputError
from esptool.bin_image import LoadFirmwareImage
from esptool.targets import CHIP_DEFS

from . import inspect

TABLE_AT = 0x8000
TABLE_LEN = 0xC00
APP_AT = 0x10000
ALIGN = 0x10000  # app partitions: 64 KB (the MMU page)
HEADROOM = 0x10000
FS_BLOCK = 4096
MIN_FS = 16 * FS_BLOCK  # boot.py and a few files; littlefs keeps 2 blocks for its superblock
STOCK_HEADER = 4 << 20  # the flash size every stock bootloader header states (but S3 <= v1.25)
MB = 1 << 20

# The largest stock app per chip, bytes (decimal MB from the `idf.py size` metrics of
# MicroPython's pull requests, v1.24-v1.28 at ESP-IDF 5.2-5.5).
STOCK_APP = {
    "esp32": 1_700_000,
    "esp32s3": 1_650_000,
    "esp32c3": 1_660_000,
    "esp32c6": 1_860_000,
    "esp32c2": 1_490_000,
}
CHIPS = ("esp32", "esp32s2", "esp32s3", "esp32c2", "esp32c3", "esp32c5", "esp32c6", "esp32p4")
KNOWN_ROWS = ("nvs", "phy_init", "factory", "vfs", "ffat")


class ConvertError(ValueError):
    """Input that cannot be converted; the message names what and the numbers."""


def _up(n: int, a: int) -> int:
    return (n + a - 1) // a * a


def _mb(n: int) -> str:
    return f"{n / MB:g} MB" if n % (MB // 16) == 0 else f"{n} bytes"


def bootloader_offset(chip: str) -> int:
    """CONFIG_BOOTLOADER_OFFSET_IN_FLASH, as esptool knows it: 0x1000, 0x2000 (C5, P4) or 0."""
    return CHIP_DEFS[chip].BOOTLOADER_FLASH_OFFSET


def _chip_of_id(chip_id: int) -> str:
    for c in CHIPS:
        if CHIP_DEFS[c].IMAGE_CHIP_ID == chip_id:
            return c
    raise ConvertError(f"chip id {chip_id} in the image header: not a chip MicroPython builds for")


def slot_size(chip: str, app_len: int) -> int:
    """The rule of this module's docstring."""
    return _up(max(app_len, STOCK_APP.get(chip, 0)) + HEADROOM, ALIGN)


def header_flash_size(chip: str, bootloader: bytes) -> int:
    """The flash size in a bootloader image's header (byte 3, high nibble), as the bootloader
    sets it for its partition-table check (update_flash_config(): unknown codes mean 2 MB)."""
    code = bootloader[3] & 0xF0
    for name, c in CHIP_DEFS[chip].FLASH_SIZES.items():
        if c == code and int(name[:-2]) <= 16:
            return int(name[:-2]) * MB
    return 2 * MB


def _app_length(chip: str, app: bytes, what: str) -> int:
    if app[:1] != b"\xe9":
        raise ConvertError(f"{what} is not an app image (no 0xE9 image header at its start)")
    if inspect.app_description(app) is None:
        raise ConvertError(f"{what} has no app description: it is not an app image")
    try:
        img = LoadFirmwareImage(chip, app)
    except Exception as e:
        cut = "End of file" in str(e)
        raise ConvertError(
            f"{what} is {'cut short' if cut else 'not a valid ' + chip + ' app image'}: {e}"
        ) from None
    n = img.data_length + (32 if img.append_digest else 0)
    if n > len(app):
        raise ConvertError(f"{what} is cut short: {len(app)} bytes of a {n}-byte image")
    if img.checksum != img.calculate_checksum():
        raise ConvertError(f"{what}: the image checksum is wrong")
    if (
        img.append_digest
        and hashlib.sha256(app[: img.data_length]).digest() != app[img.data_length : n]
    ):
        raise ConvertError(f"{what}: the image's appended SHA-256 is wrong")
    return n


def _check_bootloader(chip: str, bl: bytes) -> int:
    """Parse and verify a bootloader image as esptool does before it patches one; its length."""
    if bl[:1] != b"\xe9" or bl[32:33] != b"\x50":
        raise ConvertError(f"no {chip} bootloader image at the start of the file")
    try:
        img = CHIP_DEFS[chip].BOOTLOADER_IMAGE(io.BytesIO(bl))
        img.verify()
    except Exception as e:
        raise ConvertError(f"the bootloader image is not valid for {chip}: {e}") from None
    n = img.data_length
    if img.checksum != img.calculate_checksum():
        raise ConvertError("the bootloader image is not valid: its checksum is wrong")
    if bl[8 + 15] == 1:
        if hashlib.sha256(bl[:n]).digest() != bl[n : n + 32]:
            raise ConvertError("the bootloader image is not valid: its SHA-256 is wrong")
        n += 32
    return n


def patch_flash_size(chip: str, bl: bytes, size: int) -> bytes:
    """The bootloader image with `size` in its header, its appended SHA-256 recomputed, as
    esptool's write_flash --flash-size does (cmds._update_image_flash_params)."""
    name = f"{size // MB}MB"
    codes = CHIP_DEFS[chip].FLASH_SIZES
    if size % MB or name not in codes:
        raise ConvertError(f"{size} bytes is not a flash size of {chip}: {', '.join(codes)}")
    out = bytearray(bl)
    out[3] = (out[3] & 0x0F) | codes[name]
    if out[8 + 15] == 1:
        n = CHIP_DEFS[chip].BOOTLOADER_IMAGE(io.BytesIO(bytes(out))).data_length
        out[n : n + 32] = hashlib.sha256(bytes(out[:n])).digest()
    return bytes(out)


def _version(app: bytes) -> tuple[int, int] | None:
    b = inspect.banner(app)
    m = re.match(r"v(\d+)\.(\d+)", b[0]) if b else None
    return (int(m.group(1)), int(m.group(2))) if m else None


class Result:
    def __init__(self, **kw):
        self.__dict__.update(kw)


def make_csv(slot: int, fs: tuple[str, str, int, int] | None) -> str:
    rows = [
        "# MicroPython OTA layout made by mpota convert (ota_0 where the stock app was)",
        "# Name,   Type, SubType, Offset,   Size, Flags",
        "nvs,      data, nvs,     0x9000,   0x4000,",
        "otadata,  data, ota,     0xd000,   0x2000,",
        "phy_init, data, phy,     0xf000,   0x1000,",
        f"ota_0,    app,  ota_0,   0x{APP_AT:x},  0x{slot:x},",
        f"ota_1,    app,  ota_1,   0x{APP_AT + slot:x}, 0x{slot:x},",
    ]
    if fs:
        name, sub, off, size = fs
        rows.append(f"{name + ',':9s} data, {sub + ',':8s} 0x{off:x}, 0x{size:x},")
    return "\n".join(rows) + "\n"


def stock_rows(stock: PartitionTable):
    """A stock table's factory row and filesystem row (or None: v1.26+), and the filesystem's
    entry for layout(); ConvertError for a table that is not one of MicroPython's stock ones."""
    apps = [p for p in stock if p.type == 0]
    if [p.subtype for p in apps if 0x10 <= p.subtype < 0x20]:
        raise ConvertError(
            "the table already has OTA slots ("
            + ", ".join(p.name for p in apps)
            + "): nothing to convert"
        )
    if len(apps) != 1 or apps[0].offset != APP_AT:
        raise ConvertError(
            f"the table's app partitions are not one factory at 0x{APP_AT:x} (stock): "
            + ", ".join(f"{p.name} at 0x{p.offset:x}" for p in apps)
        )
    for p in stock:
        if p.name not in KNOWN_ROWS:
            raise ConvertError(
                f"partition {p.name!r} at 0x{p.offset:x} is not in MicroPython's stock "
                f"tables ({', '.join(KNOWN_ROWS)}): convert it by hand"
            )
    fs_row = next((p for p in stock if p.type == 1 and p.name in ("vfs", "ffat")), None)
    fs_entry = None
    if fs_row:
        sub = "fat" if fs_row.subtype == 0x81 else f"0x{fs_row.subtype:x}"
        fs_entry = (fs_row.name, sub, None)
    return apps[0], fs_row, fs_entry


def layout(
    chip: str,
    app_len: int,
    phys: int,
    fs_entry: tuple | None,
    slot: int | None = None,
    phys_given: bool = True,
) -> Result:
    """The OTA layout for an app of `app_len` bytes on `phys` bytes of flash: slot size (the
    rule of this module's docstring, or `slot`), the filesystem after the slots (a row named
    by `fs_entry` = (name, subtype, _), or none: the region v1.26+ registers at boot), the CSV
    and the binary table. `phys_given`: phys is the board's (else the bootloader header's).
    Raises ConvertError naming the numbers when the app does not fit or no room is left."""
    flash_size = phys if phys_given else None
    lines = []
    if slot is None:
        slot = slot_size(chip, app_len)
        rule = f"max(app {app_len}, stock {STOCK_APP.get(chip, 0)}) + 64 KB, rounded up to 64 KB"
    else:
        rule = "--slot-size"
        if slot % ALIGN:
            raise ConvertError(f"--slot-size 0x{slot:x} is not a multiple of 64 KB (0x10000)")
    if app_len > slot:
        raise ConvertError(
            f"the app ({app_len} bytes, 0x{app_len:x}) does not fit a slot of {slot} bytes "
            f"(0x{slot:x})"
        )
    fs_start = APP_AT + 2 * slot
    if fs_start + MIN_FS > phys:
        raise ConvertError(
            f"no room for a filesystem: two slots of 0x{slot:x} ({rule}) end at "
            f"0x{fs_start:x}, and {_mb(phys)} of flash"
            + ("" if flash_size else " (the bootloader header's)")
            + f" leaves {max(0, phys - fs_start)} bytes, less than {MIN_FS} (16 blocks of 4 KB)"
            + ("" if rule == "--slot-size" else "; a smaller --slot-size leaves more")
            + ("" if flash_size else "; give --flash-size if the board has more")
        )
    fs = None
    if fs_entry:
        fs = (fs_entry[0], fs_entry[1], fs_start, phys - fs_start)
    csv = make_csv(slot, fs)
    table = PartitionTable.from_csv(csv)
    try:
        table.verify(partition_table_offset=TABLE_AT)
    except InputError as e:  # pragma: no cover - the layout above is valid by construction
        raise ConvertError(f"the new table: {e}") from None
    table_bin = table.to_binary()
    end = table.flash_size()
    lines.append(
        f"slots: ota_0 0x{APP_AT:x} and ota_1 0x{APP_AT + slot:x}, 0x{slot:x} bytes each "
        f"({rule}); the app is {app_len} bytes"
    )
    lines.append(
        f"filesystem: vfs row 0x{fs_start:x}-0x{end:x} ({(end - fs_start) // 1024} KB)"
        if fs
        else f"filesystem: no row (MicroPython v1.26+ registers 'vfs' at boot from 0x{fs_start:x}"
        f" to the end of flash: {(phys - fs_start) // 1024} KB on {_mb(phys)})"
    )

    return Result(
        slot=slot, fs_start=fs_start, csv=csv, table=table_bin, end=end, lines=lines, fs=fs
    )


def convert(
    data: bytes,
    chip: str | None = None,
    flash_size: int | None = None,
    slot: int | None = None,
    bootloader: bytes | None = None,
) -> Result:
    """Convert a stock merged `.bin` (chip and flash size read from it; `chip` and
    `flash_size`, when given, must agree / say the board's flash) or an app image (`chip` and
    `flash_size` required; `bootloader`, a bootloader image, optional). Returns a Result with
    `image` (bytes), `offset` (where to write it), `csv`, `table` (binary), `lines` (what was
    done, for the user). Raises ConvertError."""
    lines = []
    at = None
    for off in (0x1000, 0x0, 0x2000):
        if len(data) > TABLE_AT - off + 2 and data[TABLE_AT - off : TABLE_AT - off + 2] == (
            b"\xaa\x50"
        ):
            at = off
            break
    if at is not None:  # a merged .bin
        app = data[APP_AT - at :]
        if len(app) < 0x1000:
            raise ConvertError(
                f"the merged image ends at 0x{at + len(data):x}: no app at 0x{APP_AT:x}"
            )
        found = _chip_of_id(int.from_bytes(app[12:14], "little"))
        if chip and chip != found:
            raise ConvertError(f"the image is for {found}, not {chip}")
        chip = found
        if bootloader_offset(chip) != at:
            raise ConvertError(
                f"the file starts at 0x{at:x} (its table is 0x{TABLE_AT - at:x} in), but the "
                f"{chip} bootloader is at 0x{bootloader_offset(chip):x}"
            )
        if bootloader is not None:
            raise ConvertError("--bootloader is for an app image; a merged .bin has its own")
        bl = data[: TABLE_AT - at]
        bl_len = _check_bootloader(chip, bl)
        if data[bl_len : TABLE_AT - at].strip(b"\xff"):
            raise ConvertError(f"bytes after the bootloader, before 0x{TABLE_AT:x}: not stock")
        bootloader = bl[:bl_len]
        try:
            stock = PartitionTable.from_binary(data[TABLE_AT - at : TABLE_AT - at + TABLE_LEN])
        except InputError as e:
            raise ConvertError(f"the partition table at 0x{TABLE_AT:x}: {e}") from None
        header = header_flash_size(chip, bootloader)
        lines.append(
            f"read: merged {chip} image from 0x{at:x}, bootloader header {_mb(header)}, "
            f"table of {len(stock)} partitions"
        )
        factory, fs_row, fs_entry = stock_rows(stock)
        old_app_room = factory.size
    else:  # an app image
        if data[:1] != b"\xe9":
            raise ConvertError(
                "neither a merged .bin (no partition table at 0x8000 for a file starting at "
                "0x1000, 0 or 0x2000) nor an app image (no 0xE9 header)"
            )
        found = _chip_of_id(int.from_bytes(data[12:14], "little"))
        if not chip or not flash_size:
            raise ConvertError("an app image needs --chip and --flash-size (the board's)")
        if chip != found:
            raise ConvertError(f"the app is for {found}, not {chip}")
        app = data
        header = None
        if bootloader is not None:
            bootloader = bootloader[: _check_bootloader(chip, bootloader)]
            header = header_flash_size(chip, bootloader)
        v = _version(app)
        # MicroPython up to v1.25 mounts the "vfs" row; v1.26+ registers one past the table.
        fs_entry = None if v and v >= (1, 26) else ("vfs", "fat", None)
        old_app_room = None
        lines.append(
            f"read: {chip} app image"
            + (f" of MicroPython v{v[0]}.{v[1]}" if v else " (no MicroPython banner)")
            + (f", bootloader header {_mb(header)}" if header else "")
        )
    sizes = CHIP_DEFS[chip].FLASH_SIZES
    if flash_size is not None and (flash_size % MB or f"{flash_size // MB}MB" not in sizes):
        raise ConvertError(
            f"--flash-size {flash_size} is not a flash size of {chip}: one of " + ", ".join(sizes)
        )
    app_len = _app_length(chip, app, "the app")
    if app[app_len:].strip(b"\xff"):
        raise ConvertError(f"bytes after the app image's end (0x{APP_AT + app_len:x})")
    app = app[:app_len]
    if old_app_room is not None and app_len > old_app_room:
        raise ConvertError(f"the app ({app_len} bytes) overflows its factory partition")

    lay = layout(chip, app_len, flash_size or header, fs_entry, slot, flash_size is not None)
    lines += lay.lines
    slot, fs_start, csv, table_bin, end = lay.slot, lay.fs_start, lay.csv, lay.table, lay.end

    if bootloader is not None:
        if end > header:  # only with --flash-size: without, the table ends within the header
            bootloader = patch_flash_size(chip, bootloader, flash_size)
            lines.append(
                f"bootloader header: flash size {_mb(header)} -> {_mb(flash_size)} (the table "
                f"ends at 0x{end:x}), SHA-256 recomputed"
            )
        else:
            lines.append(f"bootloader header: {_mb(header)} kept (the table ends at 0x{end:x})")
        offset = bootloader_offset(chip)
    else:
        if end > STOCK_HEADER:
            raise ConvertError(
                f"the new table ends at 0x{end:x}, past the 4 MB a stock bootloader's header "
                "states: give --bootloader (the board's, e.g. from the .bin) so that it can be "
                "checked and its header set"
            )
        offset = TABLE_AT
        lines.append(
            f"bootloader: not in the output (it starts at 0x{TABLE_AT:x}); the board's is kept "
            "and must state at least 4 MB, as stock ones do"
        )
    out = bytearray(b"\xff" * (fs_start + 2 * FS_BLOCK - offset))
    if bootloader is not None:
        out[: len(bootloader)] = bootloader
    out[TABLE_AT - offset : TABLE_AT - offset + TABLE_LEN] = table_bin
    out[APP_AT - offset : APP_AT - offset + app_len] = app
    return Result(
        image=bytes(out),
        offset=offset,
        csv=csv,
        table=table_bin,
        lines=lines,
        chip=chip,
        slot=slot,
        fs_start=fs_start,
        app_len=app_len,
    )


def write_atomic(path: str | Path, data: bytes) -> None:
    """Write `data` to `path` through a temporary file and a rename: never half a file."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()

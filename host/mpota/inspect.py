"""Read ESP32 flash contents on the PC: partition tables and app descriptions through
esp-idf-defs (a port of ESP-IDF's gen_esp32part), otadata through the simulator's own rules
(esp-idf-defs' otadata reader checks neither the CRC nor the INVALID/ABORTED states)."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from esp_idf_defs import AppDescription, PartitionTable
from espsim import otadata, parttable
from esptool.bin_image import LoadFirmwareImage
from esptool.targets import CHIP_DEFS

PT_OFFSET = parttable.OFFSET


def table_from_csv(text: str) -> list[parttable.Part]:
    """A partitions.csv, parsed by esp-idf-defs, as simulator partitions."""
    return [
        parttable.Part(p.type, p.subtype, p.offset, p.size, p.name, int(p.encrypted))
        for p in PartitionTable.from_csv(text)
    ]


def _table(raw: bytes) -> PartitionTable:
    """A binary partition table read by esp-idf-defs; ValueError (its reason) when broken."""
    try:
        return PartitionTable.from_binary(raw)
    except Exception as e:  # InputError, and UnicodeDecodeError for names that are not text
        raise ValueError(f"a broken partition table ({e})") from None


def read_table(flash: bytes) -> PartitionTable:
    """The partition table at 0x8000 of a flash dump; ValueError when there is none."""
    if flash[PT_OFFSET : PT_OFFSET + 2] != b"\xaa\x50":
        raise ValueError(f"not a flash dump: no partition table at 0x{PT_OFFSET:x}")
    return _table(flash[PT_OFFSET : PT_OFFSET + parttable.MAX_LEN])


def read_otadata(flash: bytes, table: PartitionTable) -> list[otadata.Entry] | None:
    od = next(table.find_by_type("data", "ota"), None)
    if od is None:
        return None
    return [otadata.Entry.unpack(flash[od.offset + i * 4096 :]) for i in (0, 1)]


def app_description(image: bytes) -> AppDescription | None:
    return AppDescription.from_bytes_or_none(image[32 : 32 + 256])


_BANNER = re.compile(
    rb"MicroPython (?:\(with v2\.0 preview\) )?([^\0 ]+) on (\d{4}-\d\d-\d\d)\0+"
    rb"(?:; ([^\0]*)\0)?"
)


def banner(image: bytes) -> tuple[str, str, str | None] | None:
    """(version, build date, machine) from MicroPython's REPL banner in an image's rodata
    ("MicroPython v1.28.0 on 2026-04-06\\0" then "; ESP32C3 module with ESP32C3\\0"),
    or None."""
    m = _BANNER.search(image)
    if not m:
        return None
    return (
        m.group(1).decode(),
        m.group(2).decode(),
        m.group(3).decode() if m.group(3) is not None else None,
    )


def identity(image: bytes) -> dict | None:
    """A firmware's identity (DESIGN.md): build id (app_elf_sha256) and version, the app
    description's when set, else MicroPython's from the banner."""
    d = app_description(image)
    if d is None:
        return None
    b = banner(image)
    out = {
        "build": image[32 + 144 : 32 + 176].hex(),
        "version": d.version or (b[0] if b else ""),
        "source": "app" if d.version else ("banner" if b else None),
        "project": d.project_name or ("MicroPython" if b else ""),
        "date": b[1] if b else None,
        "machine": b[2] if b else None,
    }
    return out


def _name(i: dict) -> str:
    return f"{i['project'] or 'firmware'} {i['version'] or '(unknown version)'}"


def describe_flash(flash: bytes) -> str:
    table = read_table(flash)
    out = ["Partition table (esp-idf-defs):", table.to_csv().rstrip()]
    ent = read_otadata(flash, table)
    apps = sorted(
        (p for p in table if p.type == 0 and 0x10 <= p.subtype < 0x20), key=lambda p: p.subtype
    )
    if ent is not None:
        out.append("otadata:")
        for i, e in enumerate(ent):
            slot = apps[((e.seq - 1) & 0xFFFFFFFF) % len(apps)].name if apps else "-"
            out.append(
                f"  [{i}] seq=0x{e.seq:08x} state={otadata.STATE_NAMES.get(e.state, e.state)}"
                f" crc={'ok' if e.crc_ok() else 'BAD'} valid={e.valid()}"
                + (f" -> {slot}" if e.seq != 0xFFFFFFFF else "")
            )
        a = otadata.active(ent)
        nxt = apps[((ent[a].seq - 1) & 0xFFFFFFFF) % len(apps)].name if a >= 0 and apps else None
        out.append(f"  bootloader picks: {nxt or 'factory / ota_0 (no valid entry)'}")
    out.append("app partitions:")
    for p in (p for p in table if p.type == 0):
        d = app_description(flash[p.offset : p.offset + 512])
        i = identity(flash[p.offset : p.offset + p.size]) if d else None
        what = (
            f"{_name(i)} ({d.date} {d.time}, IDF {d.idf_version}, build {i['build'][:8]})"
            if d and i
            else ("empty" if flash[p.offset] == 0xFF else "no app description")
        )
        out.append(f"  {p.name:10s} 0x{p.offset:06x}  {what}")
    return "\n".join(out)


def describe_file(data: bytes) -> str:
    """What a file is: an app image, a bootloader image, a merged firmware.bin, a partition
    table (binary or CSV) or a flash dump, and what it holds."""
    if not data.strip():
        raise ValueError("an empty file")
    if data[:2] == b"\xaa\x50":
        return "Partition table (binary):\n" + _table(data[: parttable.MAX_LEN]).to_csv().rstrip()
    if len(data) > PT_OFFSET + 2 and data[PT_OFFSET : PT_OFFSET + 2] == b"\xaa\x50":
        return "Flash dump:\n" + describe_flash(data)
    if len(data) > 0x7002 and data[:1] == b"\xe9" and data[0x7000:0x7002] == b"\xaa\x50":
        return (
            "Merged firmware.bin (bootloader, partition table and app, flashed at 0x1000): "
            "not an OTA image; use the app image (micropython.bin)."
        )
    if data[:1] == b"\xe9":
        desc = app_description(data)
        if desc is None:
            kind = (
                "bootloader image" if data[32:33] == b"\x50" else "image without app description"
            )
            return f"ESP32 {kind} ({len(data)} bytes): not an OTA app image."
        import hashlib

        chip = int.from_bytes(data[12:14], "little")
        i = identity(data)
        return "\n".join(
            [
                f"App image: {_name(i)}",
                f"  version:   {i['version'] or '(none)'} (from the "
                + {"app": "app description", "banner": "MicroPython banner"}.get(
                    i["source"], "nowhere: no app version, no banner"
                )
                + ")",
            ]
            + ([f"  banner:    MicroPython {i['version']} on {i['date']}"] if i["date"] else [])
            + ([f"  machine:   {i['machine']}"] if i["machine"] else [])
            + [
                f"  build id:  {i['build']} (app_elf_sha256)",
                f"  chip id:   {chip}",
                f"  built:     {desc.date} {desc.time}, ESP-IDF {desc.idf_version}",
                f"  length:    {len(data)} bytes",
                f"  sha256:    {hashlib.sha256(data).hexdigest()}",
            ]
        )
    try:
        text = data.decode()
    except UnicodeDecodeError:
        raise ValueError(
            "not an image, partition table or flash dump (no 0xe9 image header, no 0xaa50 "
            "partition table at 0 or 0x8000, and not text)"
        ) from None
    try:
        return "Partition table (CSV):\n" + PartitionTable.from_csv(text).to_csv().rstrip()
    except Exception as e:
        raise ValueError(f"not an image, partition table or flash dump ({e})") from None


def chip_of(image: bytes) -> str:
    chip_id = int.from_bytes(image[12:14], "little")
    for name, rom in CHIP_DEFS.items():
        if getattr(rom, "IMAGE_CHIP_ID", None) == chip_id:
            return name
    raise ValueError(f"unknown chip id {chip_id} in the image header")


def describe_image(path: str | Path) -> dict:
    """SHA-256, length, chip and app description of an app image, which esptool must find
    valid (checksum and appended digest)."""
    data = Path(path).read_bytes()
    if data[:1] != b"\xe9":
        raise ValueError(f"{path} is not an ESP32 app image (it does not start with 0xe9)")
    if data[0x7000:0x7002] == b"\xaa\x50":
        raise ValueError(
            f"{path} is a merged firmware.bin (bootloader, partition table and app): "
            "use the app image (micropython.bin)"
        )
    desc = AppDescription.from_bytes_or_none(data[32:288])
    if desc is None:
        raise ValueError(f"{path} has no app description: it is not an app image (a bootloader?)")
    chip = chip_of(data)
    img = LoadFirmwareImage(chip, str(path))
    if img.checksum != img.calculate_checksum():
        raise ValueError(f"{path}: the image checksum is wrong")
    if getattr(img, "append_digest", False) and img.stored_digest != img.calc_digest:
        raise ValueError(f"{path}: the image's appended SHA-256 is wrong")
    i = identity(data)
    return {
        "sha": hashlib.sha256(data).hexdigest(),
        "length": len(data),
        "chip": chip,
        "version": i["version"],
        "project": i["project"],
        "build": i["build"],
        "idf": desc.idf_version,
    }

"""Read ESP32 flash contents on the PC: partition tables and app descriptions through
esp-idf-defs (a port of ESP-IDF's gen_esp32part), otadata through the simulator's own rules
(esp-idf-defs' otadata reader checks neither the CRC nor the INVALID/ABORTED states)."""

from __future__ import annotations

from esp_idf_defs import AppDescription, PartitionTable
from espsim import otadata, parttable

PT_OFFSET = parttable.OFFSET


def table_from_csv(text: str) -> list[parttable.Part]:
    """A partitions.csv, parsed by esp-idf-defs, as simulator partitions."""
    return [
        parttable.Part(p.type, p.subtype, p.offset, p.size, p.name, int(p.encrypted))
        for p in PartitionTable.from_csv(text)
    ]


def read_table(flash: bytes) -> PartitionTable:
    return PartitionTable.from_binary(flash[PT_OFFSET : PT_OFFSET + parttable.MAX_LEN])


def read_otadata(flash: bytes, table: PartitionTable) -> list[otadata.Entry] | None:
    od = next(table.find_by_type("data", "ota"), None)
    if od is None:
        return None
    return [otadata.Entry.unpack(flash[od.offset + i * 4096 :]) for i in (0, 1)]


def app_description(image: bytes) -> AppDescription | None:
    return AppDescription.from_bytes_or_none(image[32 : 32 + 256])


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
        what = (
            f"{d.project_name} {d.version} ({d.date} {d.time}, IDF {d.idf_version})"
            if d
            else ("empty" if flash[p.offset] == 0xFF else "no app description")
        )
        out.append(f"  {p.name:10s} 0x{p.offset:06x}  {what}")
    return "\n".join(out)


def describe_file(data: bytes) -> str:
    """What a file is: an app image, a bootloader image, a merged firmware.bin, a partition
    table (binary or CSV) or a flash dump, and what it holds."""
    if data[:2] == b"\xaa\x50":
        return (
            "Partition table (binary):\n"
            + PartitionTable.from_binary(data[: parttable.MAX_LEN]).to_csv().rstrip()
        )
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
        return "\n".join(
            [
                f"App image: {desc.project_name} {desc.version}",
                f"  chip id:   {chip}",
                f"  built:     {desc.date} {desc.time}, ESP-IDF {desc.idf_version}",
                f"  length:    {len(data)} bytes",
                f"  sha256:    {hashlib.sha256(data).hexdigest()}",
            ]
        )
    try:
        return (
            "Partition table (CSV):\n" + PartitionTable.from_csv(data.decode()).to_csv().rstrip()
        )
    except Exception as e:
        raise ValueError(f"not an image, partition table or flash dump ({e})") from None

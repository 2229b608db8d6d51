"""The simulated ESP32 against independent references: esp-idf-defs for the partition table,
otadata fields and app descriptions; esptool for app images; ESP-IDF's own CRC test vector; and
the bootloader, esp32.Partition and NOR flash behaviour ESP-IDF and MicroPython document."""

import binascii
import struct

import pytest
from conftest import Sim, image
from esp_idf_defs import AppDescription, OtaDataSelectEntry, OtaImageState, PartitionTable
from espsim import appimage, bootloader, device, idf, otadata, parttable
from espsim.errors import EspError
from espsim.flash import Flash, PowerCut
from esptool.bin_image import LoadFirmwareImage
from mpota import images, inspect, simdev

MICROPYTHON_OTA_CSV = """\
# Partition table for MicroPython with OTA support using 4MB flash
# Name,   Type, SubType, Offset,   Size,     Flags
nvs,      data, nvs,     0x9000,   0x4000,
otadata,  data, ota,     0xd000,   0x2000,
phy_init, data, phy,     0xf000,   0x1000,
ota_0,    app,  ota_0,   0x10000,  0x180000,
ota_1,    app,  ota_1,   0x190000, 0x180000,
vfs,      data, fat,     0x310000, 0xf0000,
"""


def crc32_le(init: int, data: bytes) -> int:
    """Bit-by-bit CRC-32 (reflected 0xEDB88320), the algorithm of esp_rom_crc32_le."""
    crc = init ^ 0xFFFFFFFF
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ (0xEDB88320 if crc & 1 else 0)
    return crc ^ 0xFFFFFFFF


def test_crc_matches_esp_idf_known_answer():
    # components/esp_rom/test_apps/linux_rom_apis/main/rom_test.cpp, "crc quick check"
    vector = bytes(
        [
            0x01,
            0x21,
            0x09,
            0xFF,
            0x63,
            0x65,
            0x72,
            0x74,
            0x69,
            0x66,
            0x69,
            0x63,
            0x61,
            0x74,
            0x65,
            0x00,
            0x00,
            0x00,
            0x00,
            0x00,
            0xE5,
            0x00,
            0xFF,
            0xFF,
            0x06,
            0xBA,
            0xE7,
            0xA1,
        ]
    )
    assert crc32_le(0xFFFFFFFF, vector) == 0xD4DC5010
    assert binascii.crc32(vector, 0xFFFFFFFF) == 0xD4DC5010  # otatool.py's formula
    for seq in (1, 2, 3, 0x7FFFFFFF, 0xFFFFFFFE):
        assert otadata.crc(seq) == crc32_le(0xFFFFFFFF, struct.pack("<I", seq))
    assert otadata.crc(1) == 0x4743989A


def test_partition_table_matches_esp_idf_defs():
    ours = parttable.build(parttable.seed_table())
    theirs = PartitionTable.from_csv(MICROPYTHON_OTA_CSV)
    assert theirs.to_binary() == ours  # byte for byte, MD5 entry included
    parsed = PartitionTable.from_binary(ours)
    back = parttable.parse(theirs.to_binary(), 4 << 20)
    assert [(p.name, p.type, p.subtype, p.offset, p.size) for p in parsed] == [
        (p.label, p.type, p.subtype, p.address, p.size) for p in back
    ]
    assert [p.info() for p in back] == [p.info() for p in parttable.seed_table()]


def test_partition_table_with_other_subtypes_round_trips():
    csv = (
        "nvs,data,nvs,0x9000,0x5000,\notadata,data,ota,0xe000,0x2000,\n"
        "ota_0,app,ota_0,0x10000,0x100000,\nota_1,app,ota_1,0x110000,0x100000,\n"
        "ota_2,app,ota_2,0x210000,0x100000,\nspiffs,data,spiffs,0x310000,0x40000,\n"
        "lfs,data,littlefs,0x350000,0x40000,\ncoredump,data,coredump,0x390000,0x10000,\n"
        "keys,data,nvs_keys,0x3a0000,0x1000,\nundef,data,undefined,0x3a1000,0x1000,\n"
        "custom,data,0x40,0x3a2000,0x1000,\n"
    )
    parts = inspect.table_from_csv(csv)
    assert parttable.build(parts) == PartitionTable.from_csv(csv).to_binary()


def test_partition_table_verification_rejects_damage():
    good = bytearray(parttable.build(parttable.seed_table()))
    bad_md5 = bytearray(good)
    bad_md5[6 * 32 + 20] ^= 1
    with pytest.raises(ValueError, match="MD5"):
        parttable.parse(bad_md5, 4 << 20)
    bad_magic = bytearray(good)
    bad_magic[32] = 0
    with pytest.raises(ValueError, match="invalid magic"):
        parttable.parse(bad_magic, 4 << 20)
    with pytest.raises(ValueError, match="exceeds flash"):
        parttable.parse(good, 2 << 20)


def test_otadata_read_by_esp_idf_defs(tmp_path):
    sim = Sim(tmp_path / "flash.bin", "micropython")
    simdev.create(sim.path, image("v1.22.0"))
    (tmp_path / "v23.bin").write_bytes(image("v1.23.0"))
    sim.run(
        """
from ota.writer import OTA
with open("v23.bin", "rb") as f, OTA(verbose=False) as ota:
    ota.write_file(f)
""",
        cwd=tmp_path,
    )
    raw = sim.region("otadata")
    a = OtaDataSelectEntry.from_bytes(raw[:32])
    b = OtaDataSelectEntry.from_bytes(raw[4096:4128])
    assert (a.seq, a.ota_state) == (1, OtaImageState.VALID)  # written by the first boot
    assert (b.seq, b.ota_state) == (2, OtaImageState.NEW)  # written by set_boot()
    for e in (raw[:32], raw[4096:4128]):
        seq, label, state, crc = struct.unpack("<I20sII", e)
        assert crc == crc32_le(0xFFFFFFFF, struct.pack("<I", seq))
        assert label == b"\xff" * 20
    assert raw[32:4096] == b"\xff" * (4096 - 32) and raw[4128:] == b"\xff" * (8192 - 4128)


def test_images_are_valid_for_esptool(tmp_path):
    cases = [(chip, image("v1.23.0", chip=chip)) for chip in images.CHIPS]
    cases += [
        ("esp32", image("v1.23.0", images.SEED_IMAGE_SIZE)),
        ("esp32", images.bootloader_image()),
    ]
    for chip, data in cases:
        path = tmp_path / "i.bin"
        path.write_bytes(data)
        img = LoadFirmwareImage(chip, str(path))
        assert img.checksum == img.calculate_checksum()
        assert img.stored_digest == img.calc_digest
    d = AppDescription.from_bytes(image("v1.23.0")[32:288])
    assert (d.project_name, d.version, d.idf_version) == ("", "", "v5.5.2")
    assert AppDescription.from_bytes_or_none(images.bootloader_image()[32:288]) is None


def _flash_with(tmp_path, data: bytes, at: int = 0x10000) -> Flash:
    path = tmp_path / "f.bin"
    buf = bytearray(b"\xff" * (4 << 20))
    buf[at : at + len(data)] = data
    path.write_bytes(buf)
    return Flash(str(path))


@pytest.mark.parametrize("damage", ["none", "checksum", "digest", "body", "truncated", "magic"])
def test_image_verification_agrees_with_esptool(tmp_path, damage):
    data = bytearray(image("v1.23.0"))
    if damage == "checksum":
        data[-33] ^= 0xFF
    elif damage == "digest":
        data[-1] ^= 1
    elif damage == "body":
        data[100_000] ^= 1
    elif damage == "truncated":
        data = data[:-100]
    elif damage == "magic":
        data[0] = 0xE8
    f = _flash_with(tmp_path, bytes(data))
    try:
        appimage.verify(f.read, 0x10000, 0x180000, f.size, 0, 300)
        ours = True
    except Exception:
        ours = False
    (tmp_path / "i.bin").write_bytes(data)
    try:
        img = LoadFirmwareImage("esp32", str(tmp_path / "i.bin"))
        theirs = img.checksum == img.calculate_checksum() and img.stored_digest == img.calc_digest
    except Exception:
        theirs = False
    assert ours == theirs == (damage == "none")


def test_image_checks_chip_and_partition_size(tmp_path):
    f = _flash_with(tmp_path, image("v1.23.0", chip="esp32s3"))
    with pytest.raises(appimage.Invalid, match="mismatch chip ID, expected 0, found 9"):
        appimage.verify(f.read, 0x10000, 0x180000, f.size, 0, 300)
    f = _flash_with(tmp_path, image("v1.23.0", 300_000))
    with pytest.raises(appimage.Invalid, match="doesn't fit in partition"):
        appimage.verify(f.read, 0x10000, 200_000, f.size, 0, 300)
    with pytest.raises(appimage.Invalid, match="chip revision"):
        appimage.verify(f.read, 0x10000, 0x180000, f.size, 0, 400)  # image says max v3.99


def test_bootloader_image_is_refused_at_boot_only(tmp_path):
    # esp_image_verify() accepts a bootloader image in an app slot (the original project's
    # issue #9); the bootloader then refuses to load it over its own RAM.
    f = _flash_with(tmp_path, images.bootloader_image())
    md = appimage.verify(f.read, 0x10000, 0x180000, f.size, 0, 300)
    with pytest.raises(appimage.Invalid, match="Segment 0 .* overlaps bootloader data"):
        appimage.check_load_addresses(md)
    f = _flash_with(tmp_path, image("v1.23.0"))
    appimage.check_load_addresses(appimage.verify(f.read, 0x10000, 0x180000, f.size, 0, 300))


def test_nor_flash_semantics_and_counters(tmp_path):
    f = _flash_with(tmp_path, b"")
    f.program(0x1000, b"\x0f\xf0")
    f.program(0x1000, b"\xf3\x3f")  # programming only clears bits
    assert f.read(0x1000, 2) == b"\x03\x30"
    f.erase_region(0x10000, 0x10000 + 0x2000)  # one 64 KB block + two 4 KB sectors
    f.erase_region(0x1000, 0x1000)
    assert f.read(0x1000, 2) == b"\xff\xff"
    f.program(0x10F0, bytes(0x120))
    assert f.counts["erase_64k"] == 1 and f.counts["erase_4k"] == 3
    assert f.counts["program_pages"] == 1 + 1 + 3  # 0x10f0..0x1210 touches three pages
    assert f.counts["program_bytes"] == 2 + 2 + 0x120
    with pytest.raises(EspError) as e:
        f.erase_region(0x1001, 0x1000)
    assert e.value.code == 0x102  # ESP_ERR_INVALID_ARG


def test_power_cut_leaves_the_interrupted_operation_half_done(tmp_path):
    f = _flash_with(tmp_path, bytes(0x20000))
    f.cut_after = 1
    f.erase_sector(0x10000)  # completes
    with pytest.raises(PowerCut):
        f.erase_sector(0x11000)  # the power fails in this one
    with pytest.raises(PowerCut):
        f.read(0x10000, 4096)  # an unpowered chip does nothing at all
    with pytest.raises(PowerCut):
        f.program(0x10000, b"x")
    raw = (tmp_path / "f.bin").read_bytes()
    assert raw[0x10000:0x11000] == b"\xff" * 4096
    assert raw[0x11000:0x12000] == b"\xff" * 2048 + bytes(2048)
    g = _flash_with(tmp_path, b"")
    g.cut_after = 2
    with pytest.raises(PowerCut):
        g.program(0x20000, bytes(1024))  # pages 1 and 2 complete, page 3 half done
    g.f.seek(0x20000)
    assert g.f.read(1024) == bytes(512 + 128) + b"\xff" * (1024 - 640)


def _dev(tmp_path, version="v1.22.0", **kw) -> device.Device:
    path = tmp_path / "flash.bin"
    simdev.create(path, image(version), **kw)
    return device.Device(str(path))


def _write_entry(dev, i, seq, state, crc=None):
    od = dev.find_first(1, 0)
    dev.part_erase(od, i * 4096, 4096)
    dev.part_write(od, i * 4096, otadata.Entry(seq, b"\xff" * 20, state, crc).pack())


def _install(dev, label, data):
    p = dev.find_first(0, 0xFF, label)
    dev.part_erase(p, 0, p.size)
    dev.part_write(p, 0, data)


def test_boot_first_power_on_sets_ota_seq(tmp_path):
    dev = _dev(tmp_path)
    e = idf.read_otadata(dev)[1]
    assert (e[0].seq, e[0].state, e[0].crc_ok()) == (1, otadata.VALID, True)
    assert e[1].seq == 0xFFFFFFFF


def test_boot_rollback_states(tmp_path):
    dev = _dev(tmp_path)
    _install(dev, "ota_1", image("v1.23.0"))
    idf.set_boot_partition(dev, dev.find_first(0, 0x11))
    p, log = bootloader.boot(dev)
    assert p.label == "ota_1" and any("NEW -> PENDING_VERIFY" in x for x in log)
    p, log = bootloader.boot(dev)
    assert p.label == "ota_0" and any("PENDING_VERIFY -> ABORTED" in x for x in log)
    assert idf.get_state_partition(dev, dev.find_first(0, 0x11)) == otadata.ABORTED
    p, _ = bootloader.boot(dev)
    assert p.label == "ota_0"


@pytest.mark.parametrize("broken", [0, 1])
def test_boot_one_corrupted_otadata_sector(tmp_path, broken):
    dev = _dev(tmp_path)
    _install(dev, "ota_1", image("v1.23.0"))
    _write_entry(dev, 0, 1, otadata.VALID)
    _write_entry(dev, 1, 2, otadata.VALID)
    od = dev.find_first(1, 0)
    dev.flash.program(od.address + broken * 4096 + 28, b"\x00\x00\x00\x00")  # crc -> 0
    p, _ = bootloader.boot(dev)
    assert p.label == ("ota_0" if broken == 1 else "ota_1")


def test_boot_both_otadata_sectors_corrupted_boots_ota_0(tmp_path):
    dev = _dev(tmp_path)
    _install(dev, "ota_1", image("v1.23.0"))
    _write_entry(dev, 0, 1, otadata.VALID, crc=0)
    _write_entry(dev, 1, 2, otadata.VALID, crc=0)
    p, log = bootloader.boot(dev)
    assert p.label == "ota_0"
    assert any("ota data partition invalid" in x for x in log)


def test_boot_falls_back_when_the_selected_image_is_broken(tmp_path):
    dev = _dev(tmp_path)
    _write_entry(dev, 1, 2, otadata.VALID)  # points at ota_1, which is empty
    p, log = bootloader.boot(dev)
    assert p.label == "ota_0"
    assert any("not bootable" in x for x in log)


def test_boot_bricks_without_any_valid_app(tmp_path):
    dev = _dev(tmp_path)
    _install(dev, "ota_0", images.bootloader_image())
    with pytest.raises(bootloader.Bricked, match="No bootable app"):
        bootloader.boot(dev)
    dev.flash.erase_region(0x8000, 0x1000)
    with pytest.raises(bootloader.Bricked, match="partition table"):
        bootloader.boot(dev)


def test_set_boot_refuses_invalid_images(tmp_path):
    dev = _dev(tmp_path)
    before = idf.read_otadata(dev)[1]
    _install(dev, "ota_1", image("v1.23.0", chip="esp32s3"))
    with pytest.raises(Exception) as e:
        idf.set_boot_partition(dev, dev.find_first(0, 0x11))
    assert e.value.code == 0x1503  # ESP_ERR_OTA_VALIDATE_FAILED
    assert [x.pack() for x in idf.read_otadata(dev)[1]] == [x.pack() for x in before]


PARTITION_API = """
from esp32 import Partition
p = Partition("vfs")
print(p)
print(p.info())
print(p.ioctl(4, 0), p.ioctl(5, 0), p.ioctl(1, 0))
buf = bytearray(4096)
p.readblocks(0, buf)
print(bytes(buf[:4]))
p.writeblocks(0, bytearray(b"abcd" * 1024))
p.writeblocks(0, b"\\x00\\x00", 8)
p.readblocks(0, buf)
print(bytes(buf[:12]))
p.ioctl(6, 0)
p.readblocks(0, buf, 4)
print(bytes(buf[:4]))
small = Partition("vfs", 512)
print(small.ioctl(4, 0), small.ioctl(6, 0))
small.writeblocks(1, bytearray(b"z" * 512))
p.readblocks(0, buf)
print(bytes(buf[510:514]), bytes(buf[1022:1026]))
print([q.info()[4] for q in Partition.find(Partition.TYPE_APP)])
print([q.info()[4] for q in Partition.find(type=Partition.TYPE_DATA, label="nvs")])
print(Partition(Partition.RUNNING).info()[4], Partition(Partition.BOOT).info()[4])
print(Partition(Partition.RUNNING).get_next_update().info()[4])
for bad in ("nope", 7):
    try:
        Partition(bad)
    except Exception as e:
        print(type(e).__name__, e.args)
try:
    p.readblocks(240, bytearray(8192))
except OSError as e:
    print(e.args)
"""


def test_partition_api_behaves_like_micropython_esp32(sim):
    r = sim.run(PARTITION_API)
    assert r.stdout.splitlines() == [
        "<Partition type=1, subtype=129, address=3211264, size=983040, label=vfs, encrypted=0>",
        "(1, 129, 3211264, 983040, 'vfs', False)",
        "240 4096 0",
        str(b"\xff" * 4),
        str(b"abcdabcd\x00\x00cd"),
        str(b"\xff" * 4),
        "1920 -22",
        str(b"\xff\xffzz") + " " + str(b"zz\xff\xff"),
        "['ota_0', 'ota_1']",
        "['nvs']",
        "ota_0 ota_0",
        "ota_1",
        "OSError (2,)",
        "ValueError ()",
        "(-260, 'ESP_ERR_INVALID_SIZE')",
    ]


PER_CALL_ALLOCATIONS = """
import gc, micropython
from esp32 import Partition
p = Partition(Partition.RUNNING).get_next_update()
big = bytearray(65536)
mv = memoryview(big)
page, tail = mv[:4096], mv[100:400]
for i in range(300):
    tail[i] = i & 0xF0  # not all 0xFF: programming over it takes the bit-clearing path
def calls():
    p.writeblocks(0, big)  # 64 KB: erase + program
    p.writeblocks(16, page)  # 4 KB
    p.ioctl(6, 17)  # BLOCK_ERASE
    p.writeblocks(17, tail, 100)  # programs erased flash
    p.writeblocks(17, tail, 100)  # programs over programmed flash
    p.readblocks(0, big)
    p.readblocks(17, tail, 100)
    p.ioctl(4, 0)
calls()
gc.collect()
m = micropython.mem_total()
for _ in range(5):
    calls()
print("allocated", micropython.mem_total() - m)
print("readback", bytes(mv[100:400]) == bytes(i & 0xF0 for i in range(300)))
"""


@pytest.mark.parametrize("heap", ["2M", "192K"])
def test_partition_calls_allocate_nothing_on_the_device_heap(tmp_path, heap):
    # On a board esp32.Partition is C: its reads, writes and erases take nothing from
    # MicroPython's heap. The simulated one runs on that heap, so it must not either (no copy of
    # the caller's buffer, no frame of more than 11 words: py/objfun.c puts those on the heap).
    path = tmp_path / "flash.bin"
    simdev.create(path, image("v1.22.0", 600_032))
    r = simdev.run(path, PER_CALL_ALLOCATIONS, heap=heap)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "allocated 0\n" in r.stdout and "readback True" in r.stdout

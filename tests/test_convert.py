"""mpota convert (from a file): stock MicroPython merged images, as makeimg.py lays them out
with the stock partition tables of each generation, made OTA-capable; the result written to a
blank simulated board as `esptool write-flash OFFSET converted.bin` would, booted, updated into
ota_1 under MicroPython and rolled back."""

import hashlib

import pytest
from conftest import Sim
from esp_idf_defs import PartitionTable
from espsim import bootloader, chips, device, otadata, parttable
from esptool.cmds import _update_image_flash_params
from esptool.targets import CHIP_DEFS
from mpota import cli, convert, images, inspect, simdev

MB = 1 << 20

# ports/esp32/partitions-*.csv of MicroPython v1.24.0 (4MiB, 8MiB) and v1.28.0 (4MiBplus).
STOCK_4MIB = (
    "nvs,      data, nvs,     0x9000,  0x6000,\n"
    "phy_init, data, phy,     0xf000,  0x1000,\n"
    "factory,  app,  factory, 0x10000, 0x1F0000,\n"
    "vfs,      data, fat,     0x200000, 0x200000,\n"
)
STOCK_8MIB = STOCK_4MIB.replace("0x200000, 0x200000", "0x200000, 0x600000")
STOCK_4MIBPLUS = "\n".join(STOCK_4MIB.splitlines()[:3]) + "\n"

UPDATE = """
from ota.writer import OTA
with open({file!r}, "rb") as f, OTA(verbose=False, sha={sha!r}, length={length}) as ota:
    ota.write_file(f)
import machine
machine.reset()
"""


def stock_bin(chip, csv, version, size, header=4 * MB):
    """A merged .bin as MicroPython publishes it: bootloader (its header stating `header`),
    the table from `csv`, the app, from the chip's bootloader offset."""
    app = images.app_image(version, size=size, chip=chip)
    table = PartitionTable.from_csv(csv).to_binary()
    bl = images.bootloader_image(chip, flash_size=header)
    return images.merged_firmware(app, table, bl), app


def write_flash(path, image, offset, chip, physical):
    """A blank board of `physical` bytes after `esptool write-flash OFFSET image`."""
    flash = bytearray(b"\xff" * physical)
    flash[offset : offset + len(image)] = image
    path.write_bytes(flash)
    device.write_state(
        str(path),
        {
            "running": 0,
            "chip": chip,
            "chip_rev": chips.get(chip).default_rev,
            "rollback": 1,
            "boots": 0,
        },
    )


def run_cli(capsys, *args):
    rc = cli.main(["convert", *map(str, args)])
    out = capsys.readouterr()
    return rc, out.out, out.err


CASES = [
    # chip, stock table, header, physical flash, app version and size, slot, vfs row
    ("esp32", STOCK_4MIB, 4 * MB, 4 * MB, "v1.24.0", 1_672_800, 0x1B0000, True),
    ("esp32s3", STOCK_8MIB, 8 * MB, 8 * MB, "v1.24.0", 1_650_000, 0x1B0000, True),
    ("esp32c3", STOCK_4MIBPLUS, 4 * MB, 4 * MB, "v1.28.0", 1_660_000, 0x1B0000, False),
    ("esp32c6", STOCK_4MIBPLUS, 4 * MB, 4 * MB, "v1.28.0", 1_860_000, 0x1E0000, False),
]


@pytest.mark.parametrize(
    ("chip", "csv", "header", "physical", "version", "size", "slot", "vfs"),
    CASES,
    ids=[c[0] for c in CASES],
)
def test_stock_image_converted_boots_updates_and_rolls_back(
    tmp_path, capsys, chip, csv, header, physical, version, size, slot, vfs
):
    stock, app = stock_bin(chip, csv, version, size, header)
    (tmp_path / "stock.bin").write_bytes(stock)
    rc, out, err = run_cli(capsys, tmp_path / "stock.bin", "-o", tmp_path / "ota.bin", "--csv")
    assert rc == 0, err
    at = chips.get(chip).bootloader_offset
    assert f"write-flash 0x{at:x} " in out
    conv = (tmp_path / "ota.bin").read_bytes()

    # The table: what esp-idf-defs (gen_esp32part) makes from the CSV printed.
    printed = out[out.index("# MicroPython OTA layout") :].split(str(tmp_path))[0]
    printed = printed[: printed.rindex("\n") + 1]
    assert PartitionTable.from_csv(printed).to_binary() == conv[0x8000 - at : 0x8C00 - at]
    table = PartitionTable.from_binary(conv[0x8000 - at : 0x8C00 - at])
    assert parttable.build(inspect.table_from_csv(printed)) == table.to_binary()  # the sim's own
    rows = {p.name: (p.offset, p.size) for p in table}
    assert rows["otadata"] == (0xD000, 0x2000)
    assert rows["ota_0"] == (0x10000, slot) and rows["ota_1"] == (0x10000 + slot, slot)
    if vfs:
        assert rows["vfs"] == (0x10000 + 2 * slot, physical - 0x10000 - 2 * slot)
    else:
        assert "vfs" not in rows and table.flash_size() == 0x10000 + 2 * slot
    # The bootloader and the app's bytes did not move; otadata, nvs and the new filesystem's
    # first two blocks are blank.
    assert conv[: 0x8000 - at] == stock[: 0x8000 - at]
    assert conv[0x10000 - at : 0x10000 - at + len(app)] == app
    assert conv[0x9000 - at : 0xF000 - at] == b"\xff" * 0x6000
    fs = 0x10000 + 2 * slot
    assert len(conv) == fs + 0x2000 - at and conv[fs - at :] == b"\xff" * 0x2000

    # Written to a blank board, it boots ota_0 (otadata blank) ...
    flash = tmp_path / "flash.bin"
    write_flash(flash, conv, at, chip, physical)
    log = simdev.power_on(flash)
    assert log[-1] == "running 'ota_0' at 0x10000", log
    sim = Sim(flash, "micropython")
    # ... takes an OTA update into ota_1 ...
    new = images.app_image("v1.28.1", size=size - 4096, chip=chip)
    (tmp_path / "new.bin").write_bytes(new)
    sha = hashlib.sha256(new).hexdigest()
    sim.run(UPDATE.format(file="new.bin", sha=sha, length=len(new)), cwd=tmp_path)
    assert sim.running() == "ota_1"
    assert sim.state("ota_1") == otadata.PENDING_VERIFY
    assert sim.region("ota_1")[: len(new)] == new
    # ... and, not confirmed, returns to ota_0 at the next boot.
    log = simdev.power_on(flash)
    assert log[-1] == "running 'ota_0' at 0x10000", log
    assert sim.state("ota_1") == otadata.ABORTED
    assert sim.region("ota_0")[: len(app)] == app


def test_header_flash_size_raised_only_where_the_table_needs_it(tmp_path, capsys):
    # A v1.26+ S3 image (header 4 MB) on an 8 MB board: with slots of 3 MB the table ends past
    # 4 MB, so the header must say 8 MB; the bootloader refuses the table otherwise.
    stock, app = stock_bin("esp32s3", STOCK_4MIBPLUS, "v1.28.0", 1_650_000)
    r = convert.convert(stock, flash_size=8 * MB, slot=0x300000)
    assert any("4 MB -> 8 MB" in line for line in r.lines)
    bl = r.image[: len(images.bootloader_image("esp32s3"))]
    assert bl[3] >> 4 == 3  # 8MB
    # esptool finds the patched bootloader valid: checksum and recomputed SHA-256
    n = convert._check_bootloader("esp32s3", bl)
    assert hashlib.sha256(bl[: n - 32]).digest() == bl[n - 32 : n]
    assert bl[4:] != stock[4 : len(bl)]  # the digest changed with the header
    # byte for byte what esptool's write-flash --flash-size 8MB makes of the stock bootloader
    esp = object.__new__(CHIP_DEFS["esp32s3"])  # the ROM class's constants, no port
    assert _update_image_flash_params(esp, 0, "keep", "keep", "8MB", stock[: len(bl)]) == bl
    write_flash(tmp_path / "f.bin", r.image, 0, "esp32s3", 8 * MB)
    assert simdev.power_on(tmp_path / "f.bin")[-1] == "running 'ota_0' at 0x10000"
    # The same table behind the stock header: refused as ESP-IDF's bootloader does.
    unpatched = bytearray(r.image)
    unpatched[: len(bl)] = stock[: len(bl)]
    write_flash(tmp_path / "g.bin", bytes(unpatched), 0, "esp32s3", 8 * MB)
    with pytest.raises(bootloader.Bricked, match="exceeds flash chip size 0x400000"):
        simdev.power_on(tmp_path / "g.bin")
    # Slots that end inside 4 MB leave the header as it was.
    r = convert.convert(stock, flash_size=8 * MB)
    assert r.image[:0x8000] == stock[:0x8000]
    assert any("4 MB kept" in line for line in r.lines)
    # A v1.24 ESP32 image (a vfs row) on a 16 MB board: the vfs row runs to 16 MB, so must the
    # header.
    stock32, _ = stock_bin("esp32", STOCK_4MIB, "v1.24.0", 1_600_000)
    r32 = convert.convert(stock32, flash_size=16 * MB)
    assert PartitionTable.from_binary(r32.table)["vfs"].size == 16 * MB - 0x370000
    assert r32.image[3] >> 4 == 4 and r32.image[4:0x7000] != stock32[4:0x7000]
    write_flash(tmp_path / "h.bin", r32.image, 0x1000, "esp32", 16 * MB)
    assert simdev.power_on(tmp_path / "h.bin")[-1] == "running 'ota_0' at 0x10000"
    # No --flash-size: the board's flash is taken to be the header's 4 MB.
    with pytest.raises(convert.ConvertError, match="give --flash-size if the board has more"):
        convert.convert(stock, slot=0x200000)


def test_app_bin_with_chip_and_flash_size(tmp_path, capsys):
    app = images.app_image("v1.28.0", size=1_660_000, chip="esp32c3")
    (tmp_path / "app.bin").write_bytes(app)
    out = tmp_path / "ota.bin"
    rc, _, err = run_cli(capsys, tmp_path / "app.bin", "-o", out)
    assert rc == 2 and "needs --chip and --flash-size" in err and not out.exists()
    rc, _, err = run_cli(
        capsys, tmp_path / "app.bin", "-o", out, "--chip", "esp32s3", "--flash-size", "4MB"
    )
    assert rc == 2 and "for esp32c3, not esp32s3" in err
    rc, text, err = run_cli(
        capsys, tmp_path / "app.bin", "-o", out, "--chip", "esp32c3", "--flash-size", "4MB"
    )
    assert rc == 0, err
    assert "write-flash 0x8000 " in text  # no bootloader: the board keeps its own
    conv = out.read_bytes()
    table = PartitionTable.from_binary(conv[:0xC00])
    assert [p.name for p in table] == ["nvs", "otadata", "phy_init", "ota_0", "ota_1"]  # v1.28
    # On a stock C3 board (its bootloader at 0), written at 0x8000, it boots ota_0.
    bl = images.bootloader_image("esp32c3")
    write_flash(tmp_path / "f.bin", bl, 0, "esp32c3", 4 * MB)
    flash = bytearray((tmp_path / "f.bin").read_bytes())
    flash[0x8000 : 0x8000 + len(conv)] = conv
    (tmp_path / "f.bin").write_bytes(flash)
    assert simdev.power_on(tmp_path / "f.bin")[-1] == "running 'ota_0' at 0x10000"
    # A v1.24 app gets a vfs row (its firmware registers none); with --bootloader, a whole image.
    old = images.app_image("v1.24.0", size=1_600_000, chip="esp32c3")
    r = convert.convert(old, "esp32c3", 4 * MB, bootloader=bl)
    assert r.offset == 0 and r.image[: len(bl)] == bl
    assert PartitionTable.from_binary(r.table)["vfs"].offset == 0x370000


@pytest.mark.parametrize(
    ("args", "message"),
    [
        # A C6 app of 2.1 MB: two slots of 0x220000 do not leave a filesystem on 4 MB.
        ((), "no room for a filesystem: two slots of 0x220000"),
        (("--slot-size", "0x1C0000"), "the app (2100000 bytes, 0x200b20) does not fit a slot"),
        (("--slot-size", "0x1F8000"), "not a multiple of 64 KB"),
        (("--flash-size", "3MB"), "not a flash size of esp32c6"),
    ],
)
def test_refused_naming_the_numbers(tmp_path, capsys, args, message):
    stock, _ = stock_bin(
        "esp32c6", STOCK_4MIBPLUS.replace("0x1F0000", "0x210000"), "v1.28.0", 2_100_000
    )
    (tmp_path / "stock.bin").write_bytes(stock)
    out = tmp_path / "ota.bin"
    rc, text, err = run_cli(capsys, tmp_path / "stock.bin", "-o", out, *args)
    assert rc == 2 and message in err, err
    assert len(err.strip().splitlines()) == 1 and not text
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["stock.bin"]


def test_bad_inputs_one_line_each(tmp_path, capsys):
    stock, app = stock_bin("esp32", STOCK_4MIB, "v1.24.0", 1_600_000)
    ota_table = PartitionTable.from_csv(convert.make_csv(0x1B0000, None)).to_binary()
    bad_md5 = bytearray(stock)
    bad_md5[0x7000 + 3 * 32 + 20] ^= 1
    cut = stock[: 0x10000 - 0x1000 + 100_000]
    bad_app = bytearray(stock)
    bad_app[0x10000 - 0x1000 + 5000] ^= 0xFF
    bad_bl = bytearray(stock)
    bad_bl[3000] ^= 0xFF
    cases = {
        "random.bin": (bytes(range(256)) * 64, "neither a merged .bin"),
        "ota.bin": (images.merged_firmware(app, ota_table), "already has OTA slots"),
        "md5.bin": (bytes(bad_md5), "MD5"),
        "cut.bin": (cut, "cut short"),
        "app.bin": (bytes(bad_app), "checksum is wrong"),
        "bl.bin": (bytes(bad_bl), "bootloader image is not valid"),
        "empty.bin": (b"", "neither a merged .bin"),
    }
    for name, (data, message) in cases.items():
        (tmp_path / name).write_bytes(data)
        rc, text, err = run_cli(capsys, tmp_path / name, "-o", tmp_path / "out.bin")
        assert rc == 2 and message in err and len(err.strip().splitlines()) == 1, (name, err)
        assert not (tmp_path / "out.bin").exists()
    rc, _, err = run_cli(capsys, tmp_path / "missing.bin", "-o", tmp_path / "out.bin")
    assert rc == 2 and "No such file" in err

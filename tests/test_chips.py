"""Every chip the simulator knows: images built for it with esptool's image classes (esptool adds
its padding segments at load address 0 where the flash-mapped segments need alignment) are
verified by the simulator (espsim: esp_image_verify and the bootloader's load) and by the C host
backend (esp_image_format_host.c: ota_host_verify_image, ota_host_load_image), which must agree,
failures included. The real MicroPython ESP32-C3 image of ../shared/reference/firmware boots on a
simulated ESP32-C3 and is refused by an ESP32."""

from __future__ import annotations

import ctypes
import hashlib
import os
import random
import struct
from pathlib import Path

import pytest
from conftest import ROOT, build_c
from espsim import appimage, bootloader, chips, device, errors
from esptool import bin_image
from mpota import images, simdev

# ../shared/reference/firmware beside the repository, or $OTA_REFERENCE_DIR (e.g. from a worktree)
REFERENCE = (
    Path(os.environ.get("OTA_REFERENCE_DIR", ROOT.parent / "shared" / "reference" / "firmware"))
    / "micropython-v1.28.0-esp32c3.bin"
)
ALL = sorted(chips.CHIPS)
OTA_0 = 0x10000
FAIL = errors.ESP_FAIL
INVALID = errors.ESP_ERR_IMAGE_INVALID


def build(chip: str, **kw) -> bytes:
    """An app image as an ESP-IDF build lays it out for chip: DROM (app description first),
    DRAM, IRAM, IROM, with esptool's padding segments. kw: min_rev, max_rev, mmu_log2 (the app
    description's mmu_page_size), extra (more ELFSections), dram (DRAM load address)."""
    c = chips.get(chip)
    rng = random.Random(chip)
    img = getattr(bin_image, chip.upper() + "FirmwareImage")()
    img.flash_mode = 2
    img.flash_size_freq = 0x20
    img.append_digest = True
    img.min_rev_full = kw.get("min_rev", c.rev_min_full)
    img.max_rev_full = kw.get("max_rev", c.rev_max_full)
    desc = bytearray(images.app_desc("", "", elf_sha256=rng.randbytes(32)))
    desc[180] = kw.get("mmu_log2", 16)
    rom = img.ROM_LOADER
    dram = kw.get("dram", c.dram[0] + 0x8000)
    iram = c.iram[0] if c.iram != c.dram else c.iram[0] + 0x20000
    img.entrypoint = iram
    drom = rom.DROM_MAP_START + 0x20
    irom = rom.IROM_MAP_START + 0x20
    if irom // 0x10000 == drom // 0x10000:  # C5: one range for both; rodata first, as ESP-IDF
        irom = drom + 0x10000
    img.segments = [
        bin_image.ELFSection(b".flash.appdesc", drom, bytes(desc) + rng.randbytes(0x3000), 0),
        bin_image.ELFSection(b".dram0.data", dram, rng.randbytes(0x1000), 0),
        bin_image.ELFSection(b".iram0.text", iram, rng.randbytes(0x2000), 0),
        bin_image.ELFSection(b".flash.text", irom, rng.randbytes(0x6000), 0),
        *kw.get("extra", ()),
    ]
    return img.save(None)


def segments(image: bytes) -> list[tuple[int, int, int]]:
    """(load address, length, file offset of the data) of each segment."""
    out, pos = [], 24
    for _ in range(image[1]):
        load, n = struct.unpack_from("<II", image, pos)
        out.append((load, n, pos + 8))
        pos += 8 + n
    return out


def resealed(image: bytes, edit) -> bytes:
    """image after edit(bytearray), with its appended SHA-256 made right again (the checksum
    covers segment data only; edit must not change that)."""
    b = bytearray(image)
    edit(b)
    b[-32:] = hashlib.sha256(bytes(b[:-32])).digest()
    return bytes(b)


class Host:
    """The C host backend (build/c/libota_host.so) over one simulated flash."""

    def __init__(self):
        build_c()
        self.lib = ctypes.CDLL(str(ROOT / "build" / "c" / "libota_host.so"))
        self.lib.esp_partition_find_first.restype = ctypes.c_void_p
        self.lib.esp_partition_find_first.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p]
        for f in ("ota_host_verify_image", "ota_host_load_image"):
            getattr(self.lib, f).argtypes = [ctypes.c_void_p]

    def check(self, flash: Path) -> tuple[int, int]:
        """(esp_image_verify, bootloader load) results for the app in ota_0."""
        assert self.lib.ota_host_open(str(flash).encode()) == 0
        try:
            p = self.lib.esp_partition_find_first(0, 0x10, None)
            assert p
            return self.lib.ota_host_verify_image(p), self.lib.ota_host_load_image(p)
        finally:
            self.lib.ota_host_close()


@pytest.fixture(scope="module")
def host() -> Host:
    return Host()


def sim_check(flash: Path) -> tuple[int, int]:
    """The simulator's (esp_image_verify, bootloader load) results for the app in ota_0."""
    dev = device.Device(str(flash))
    try:
        verify = load = 0
        try:
            md = appimage.verify(
                dev.flash.read, OTA_0, 0x180000, dev.flash.size, dev.chip, dev.chip_rev
            )
        except errors.EspError as e:
            return e.code, e.code
        try:
            appimage.check_load_addresses(md)
        except errors.EspError as e:
            load = e.code
        return verify, load
    finally:
        dev.close()


def both(tmp_path: Path, host: Host, image: bytes, chip: str, rev: int | None = None):
    """The simulator's and the host backend's results, which must be the same."""
    flash = tmp_path / f"{chip}.bin"
    simdev.create(flash, image, chip=chip, chip_rev=rev, boot=False)
    sim, c = sim_check(flash), host.check(flash)
    assert sim == c, f"simulator {sim} != host backend {c}"
    return sim


@pytest.mark.parametrize("chip", ALL)
def test_an_image_for_each_chip_boots_there_with_its_padding(tmp_path, host, chip):
    img = build(chip)
    assert any(load == 0 for load, _, _ in segments(img)), "esptool added no padding segment"
    assert both(tmp_path, host, img, chip) == (0, 0)
    flash = tmp_path / "boot.bin"
    log = simdev.create(flash, img, chip=chip)
    assert log[-1] == "running 'ota_0' at 0x10000"
    assert device.read_state(str(flash))["chip_rev"] == chips.get(chip).default_rev


@pytest.mark.parametrize("chip", ALL)
def test_an_image_for_another_chip_is_refused(tmp_path, host, chip):
    other = "esp32c3" if chip == "esp32" else "esp32"
    assert both(tmp_path, host, build(other), chip) == (FAIL, FAIL)
    with pytest.raises(
        bootloader.Bricked,
        match="mismatch chip ID, expected %d, found %d"
        % (chips.get(chip).chip_id, chips.get(other).chip_id),
    ):
        simdev.create(tmp_path / "boot.bin", build(other), chip=chip)


@pytest.mark.parametrize("chip", ["esp32", "esp32s3", "esp32c3", "esp32c6"])
def test_chip_revision_out_of_range(tmp_path, host, chip):
    rev = chips.get(chip).default_rev
    assert both(tmp_path, host, build(chip, min_rev=rev + 1), chip) == (FAIL, FAIL)
    assert both(tmp_path, host, build(chip, max_rev=rev), chip, rev + 1) == (FAIL, FAIL)
    assert both(tmp_path, host, build(chip, min_rev=rev, max_rev=rev), chip) == (0, 0)
    assert both(tmp_path, host, build(chip, max_rev=0xFFFF), chip, 9999) == (0, 0)  # unset
    with pytest.raises(bootloader.Bricked, match=r"Required >= v\d+\.\d+, found v"):
        simdev.create(tmp_path / "boot.bin", build(chip, min_rev=rev + 1), chip=chip)


@pytest.mark.parametrize("chip", ALL)
def test_load_addresses_are_the_chips(tmp_path, host, chip):
    c = chips.get(chip)
    # Over the bootloader's own data: the app verifies (esp_ota_end would accept it), the
    # bootloader refuses to load it.
    over_bl = build(chip, dram=c.bl_dram[0] - 0x800)
    assert both(tmp_path, host, over_bl, chip) == (0, INVALID)
    # Below the bootloader's stack (the ROM's stack top less 32 KB of headroom)
    stack = build(chip, dram=c.rom_stack_start - 0x8000 - 0x800)
    assert both(tmp_path, host, stack, chip) == (0, INVALID)
    # An address in no RAM of any of these chips (nor flash-mapped on any)
    alien = 0x3FF90000
    assert both(tmp_path, host, build(chip, dram=alien), chip) == (0, INVALID)
    with pytest.raises(bootloader.Bricked, match="invalid: bad load address range"):
        simdev.create(tmp_path / "boot.bin", build(chip, dram=alien), chip=chip)
    # RTC memory, where the chip has it, and a segment below 0x10000000 (not loaded at all)
    extra = [bin_image.ELFSection(b".noload", 0x4, bytes(64), 0)]
    if c.rtc_dram:
        extra.append(bin_image.ELFSection(b".rtc.data", c.rtc_dram[0], bytes(32), 0))
    assert both(tmp_path, host, build(chip, extra=extra), chip) == (0, 0)


def shift_irom(image: bytes, chip: str, delta: int) -> bytes:
    """image with its flash-mapped code (IROM) segment's load address moved by delta."""
    irom = chips.get(chip).irom
    segs = segments(image)
    i = max(i for i, s in enumerate(segs) if irom[0] <= s[0] < irom[1])
    at = segs[i][2] - 8

    def shift(b):
        struct.pack_into("<I", b, at, segs[i][0] + delta)

    return resealed(image, shift)


@pytest.mark.parametrize("chip", ["esp32", "esp32s2", "esp32s3", "esp32c3", "esp32c6"])
def test_a_flash_mapped_segment_off_its_mmu_page_is_refused(tmp_path, host, chip):
    assert both(tmp_path, host, build(chip), chip) == (0, 0)
    for delta in (0x1000, 0x8000, 0x10004):
        assert both(tmp_path, host, shift_irom(build(chip), chip, delta), chip) == (
            INVALID,
            INVALID,
        )


@pytest.mark.parametrize("chip", ["esp32c2", "esp32c6", "esp32c3"])
def test_configurable_mmu_page_comes_from_the_app_description(tmp_path, host, chip):
    # C2 and C6 (SOC_MMU_PAGE_SIZE_CONFIGURABLE) check the alignment against the page size the
    # app description states (here 32 KB); other chips against 64 KB whatever it says.
    img = shift_irom(build(chip, mmu_log2=15), chip, 0x8000)
    expect = (0, 0) if chips.get(chip).mmu_page_configurable else (INVALID, INVALID)
    assert both(tmp_path, host, img, chip) == expect
    assert both(tmp_path, host, shift_irom(build(chip), chip, 0x8000), chip) == (
        INVALID,
        INVALID,
    )
    # Without an app description there is no page size to read: ESP_FAIL on C2 and C6.
    nodesc = bytearray(build(chip))
    nodesc[32:36] = bytes(4)
    expect = (FAIL, FAIL) if chips.get(chip).mmu_page_configurable else (0, 0)
    assert both(tmp_path, host, fix_checksum(bytes(nodesc)), chip) == expect


def fix_checksum(image: bytes) -> bytes:
    """image with its XOR checksum and appended SHA-256 made right again."""
    b = bytearray(image)
    x = 0xEF
    for _, n, off in segments(image):
        for v in image[off : off + n]:
            x ^= v
    b[-33] = x
    b[-32:] = hashlib.sha256(bytes(b[:-32])).digest()
    return bytes(b)


@pytest.mark.skipif(not REFERENCE.exists(), reason=f"no reference image at {REFERENCE}")
def test_the_real_micropython_esp32c3_image(tmp_path, host):
    ref = REFERENCE.read_bytes()
    assert both(tmp_path, host, ref, "esp32c3") == (0, 0)
    log = simdev.create(tmp_path / "c3.bin", ref, chip="esp32c3")
    assert log[-1] == "running 'ota_0' at 0x10000"
    assert both(tmp_path, host, ref, "esp32") == (FAIL, FAIL)
    with pytest.raises(bootloader.Bricked, match="expected 0, found 5"):
        simdev.create(tmp_path / "esp32.bin", ref, chip="esp32")
    # v0.3 is the least revision it runs on
    assert both(tmp_path, host, ref, "esp32c3", rev=2) == (FAIL, FAIL)


def test_every_chip_has_a_bootloader_image_where_its_rom_looks(tmp_path):
    for chip in ALL:
        c = chips.get(chip)
        bl = images.bootloader_image(chip)
        assert struct.unpack_from("<H", bl, 12)[0] == c.chip_id
        for load, n, _ in segments(bl):
            assert any(
                r[0] <= load and load + n <= r[1] for r in (c.bl_dram, c.bl_iram, c.bl_loader_iram)
            )
        flash = tmp_path / f"{chip}.bin"
        simdev.create(flash, build(chip), chip=chip)
        assert flash.read_bytes()[c.bootloader_offset] == 0xE9


def test_sim_create_names_the_chips(tmp_path, capsys):
    from mpota import cli

    assert (
        cli.main(
            ["sim", "create", str(tmp_path / "f.bin"), "--chip", "esp32c3", "--chip-rev", "v0.3"]
        )
        == 0
    )
    assert "ESP32-C3 v0.3" in capsys.readouterr().out
    assert device.read_state(str(tmp_path / "f.bin"))["chip_rev"] == 3
    with pytest.raises(SystemExit):
        cli.main(["sim", "create", str(tmp_path / "g.bin"), "--chip", "esp8266"])
    assert "esp32c6" in capsys.readouterr().err

# The ESP32 chips MicroPython builds for, as ESP-IDF v5.5 describes them to its bootloader and
# to esp_image_verify() (components/bootloader_support/src/esp_image_format.c):
# - chip id: esp_chip_id_t (components/bootloader_support/include/esp_app_format.h);
# - memory map: components/soc/<chip>/include/soc/soc.h (SOC_DROM/IROM_LOW/HIGH: flash-mapped,
#   SOC_DRAM/IRAM, SOC_DIRAM_*, SOC_RTC_IRAM/DRAM (when SOC_RTC_FAST_MEM_SUPPORTED),
#   SOC_RTC_DATA (when SOC_RTC_SLOW_MEM_SUPPORTED), SOC_ROM_STACK_START, SOC_DIRAM_INVERTED);
# - the 2nd stage bootloader's own RAM: the MEMORY of
#   components/bootloader/subproject/main/ld/<chip>/bootloader.ld (dram_seg holds
#   _dram_start.._dram_end, iram_loader_seg holds _loader_text_start.._end, iram_seg the rest);
# - MMU page: CONFIG_MMU_PAGE_SIZE (components/soc/Kconfig) is 64 KB unless the chip has
#   SOC_MMU_PAGE_SIZE_CONFIGURABLE (C2, C6) and 1 or 2 MB of flash; on those chips the image
#   states its page size in esp_app_desc_t.mmu_page_size and verify_segment_header() uses it;
# - revisions: CONFIG_<CHIP>_REV_MIN_FULL / _REV_MAX_FULL defaults of
#   components/esp_hw_support/port/<chip>/Kconfig.hw_support, the header fields an ESP-IDF
#   build writes; the simulated chip's revision defaults to a common production one;
# - where the ROM finds the 2nd stage bootloader: CONFIG_BOOTLOADER_OFFSET_IN_FLASH
#   (components/bootloader/Kconfig.projbuild): 0x1000 on ESP32 and S2, 0x2000 on C5, else 0.
# ESP32-P4 is left out: its memory map and ROM stack depend on the v3 / pre-v3 revision choice.

MMU_PAGE = 0x10000
ROM_LOADED_LIMIT = 0x10000000  # should_load(): addresses below are never loaded (0: padding)


class Chip:
    def __init__(self, name, chip_id, display, arch, **kw):
        self.name = name
        self.chip_id = chip_id
        self.display = display
        self.arch = arch
        self.drom = kw["drom"]
        self.irom = kw["irom"]
        self.dram = kw["dram"]
        self.iram = kw["iram"]
        self.diram_dram = kw["diram_dram"]
        self.diram_iram = kw["diram_iram"]
        self.diram_inverted = kw.get("diram_inverted", False)
        self.rtc_iram = kw.get("rtc_iram")  # None: no SOC_RTC_FAST_MEM_SUPPORTED
        self.rtc_dram = kw.get("rtc_dram")
        self.rtc_slow = kw.get("rtc_slow")  # None: no SOC_RTC_SLOW_MEM_SUPPORTED
        self.rom_stack_start = kw["rom_stack_start"]
        self.bl_iram = kw["bl_iram"]
        self.bl_loader_iram = kw["bl_loader_iram"]
        self.bl_dram = kw["bl_dram"]
        self.mmu_page_configurable = kw.get("mmu_page_configurable", False)
        self.rev_min_full = kw["rev_min_full"]
        self.rev_max_full = kw["rev_max_full"]
        self.default_rev = kw["default_rev"]
        self.bootloader_offset = kw.get("bootloader_offset", 0)

    def should_map(self, addr):
        return self.irom[0] <= addr < self.irom[1] or self.drom[0] <= addr < self.drom[1]

    def __repr__(self):
        return "<Chip %s>" % self.display


def _bl_ram(usable_dram_end, iram_len, iram_dram_offset=0):
    # bootloader.ld of the chips whose bootloader RAM sits below the ROM's stack: dram_seg 0x5000
    # bytes ending 0x2000 below bootloader_usable_dram_end, iram_loader_seg (0x7000) below it,
    # iram_seg below that; iram_dram_offset converts the DRAM address to the IRAM bus.
    dram_end = usable_dram_end - 0x2000
    dram = (dram_end - 0x5000, dram_end)
    loader = dram[0] - 0x7000 + iram_dram_offset
    return (loader - iram_len, loader), (loader, loader + 0x7000), dram


def _chip(name, chip_id, display, arch, **kw):
    if "usable_dram_end" in kw:
        kw["bl_iram"], kw["bl_loader_iram"], kw["bl_dram"] = _bl_ram(
            kw.pop("usable_dram_end"), kw.pop("bl_iram_len"), kw.pop("iram_dram_offset", 0)
        )
    return Chip(name, chip_id, display, arch, **kw)


CHIPS = {}
for _c in (
    _chip(
        "esp32",
        0,
        "ESP32",
        "xtensa",
        drom=(0x3F400000, 0x3F800000),
        irom=(0x400D0000, 0x40400000),
        dram=(0x3FFAE000, 0x40000000),
        iram=(0x40080000, 0x400AA000),
        diram_dram=(0x3FFE0000, 0x40000000),
        diram_iram=(0x400A0000, 0x400C0000),
        diram_inverted=True,
        rtc_iram=(0x400C0000, 0x400C2000),
        rtc_dram=(0x3FF80000, 0x3FF82000),
        rtc_slow=(0x50000000, 0x50002000),
        rom_stack_start=0x3FFE3F20,
        bl_iram=(0x40080400, 0x40090000),
        bl_loader_iram=(0x40078000, 0x40080000),
        bl_dram=(0x3FFF0000, 0x3FFF6000),
        rev_min_full=0,
        rev_max_full=399,
        default_rev=300,
        bootloader_offset=0x1000,
    ),
    _chip(
        "esp32s2",
        2,
        "ESP32-S2",
        "xtensa",
        drom=(0x3F000000, 0x3FF80000),
        irom=(0x40080000, 0x40800000),
        dram=(0x3FFB0000, 0x40000000),
        iram=(0x40020000, 0x40070000),
        diram_dram=(0x3FFB0000, 0x40000000),
        diram_iram=(0x40020000, 0x40070000),
        rtc_iram=(0x40070000, 0x40072000),
        rtc_dram=(0x3FF9E000, 0x3FFA0000),
        rtc_slow=(0x50000000, 0x50002000),
        rom_stack_start=0x3FFFE70C,
        bl_iram=(0x4004A000, 0x4004E000),
        bl_loader_iram=(0x4004E000, 0x40055000),
        bl_dram=(0x3FFE5000, 0x3FFEAB00),
        rev_min_full=0,
        rev_max_full=199,
        default_rev=100,
        bootloader_offset=0x1000,
    ),
    _chip(
        "esp32s3",
        9,
        "ESP32-S3",
        "xtensa",
        drom=(0x3C000000, 0x3E000000),
        irom=(0x42000000, 0x44000000),
        dram=(0x3FC88000, 0x3FD00000),
        iram=(0x40370000, 0x403E0000),
        diram_dram=(0x3FC88000, 0x3FCF0000),
        diram_iram=(0x40378000, 0x403E0000),
        rtc_iram=(0x600FE000, 0x60100000),
        rtc_dram=(0x600FE000, 0x60100000),
        rtc_slow=(0x50000000, 0x50002000),
        rom_stack_start=0x3FCEB710,
        usable_dram_end=0x3FCE9700,
        bl_iram_len=0x3000,
        iram_dram_offset=0x6F0000,
        rev_min_full=0,
        rev_max_full=99,
        default_rev=2,
    ),
    _chip(
        "esp32c2",
        12,
        "ESP32-C2",
        "riscv",
        drom=(0x3C000000, 0x3C400000),
        irom=(0x42000000, 0x42400000),
        dram=(0x3FCA0000, 0x3FCE0000),
        iram=(0x4037C000, 0x403C0000),
        diram_dram=(0x3FCA0000, 0x3FCE0000),
        diram_iram=(0x40380000, 0x403C0000),
        rom_stack_start=0x3FCDEB70,
        usable_dram_end=0x3FCDCB70,
        bl_iram_len=0x2800,
        iram_dram_offset=0x6E0000,
        mmu_page_configurable=True,
        rev_min_full=100,
        rev_max_full=299,
        default_rev=200,
    ),
    _chip(
        "esp32c3",
        5,
        "ESP32-C3",
        "riscv",
        drom=(0x3C000000, 0x3C800000),
        irom=(0x42000000, 0x42800000),
        dram=(0x3FC80000, 0x3FCE0000),
        iram=(0x4037C000, 0x403E0000),
        diram_dram=(0x3FC80000, 0x3FCE0000),
        diram_iram=(0x40380000, 0x403E0000),
        rtc_iram=(0x50000000, 0x50002000),
        rtc_dram=(0x50000000, 0x50002000),
        rom_stack_start=0x3FCDE710,
        usable_dram_end=0x3FCDC710,
        bl_iram_len=0x2800,
        iram_dram_offset=0x700000,
        rev_min_full=3,
        rev_max_full=199,
        default_rev=4,
    ),
    _chip(
        "esp32c6",
        13,
        "ESP32-C6",
        "riscv",
        # SOC_IROM_HIGH = SOC_IROM_LOW + (SOC_MMU_PAGE_SIZE << 8), with 64 KB pages; DROM = IROM
        drom=(0x42000000, 0x43000000),
        irom=(0x42000000, 0x43000000),
        dram=(0x40800000, 0x40880000),
        iram=(0x40800000, 0x40880000),
        diram_dram=(0x40800000, 0x40880000),
        diram_iram=(0x40800000, 0x40880000),
        rtc_iram=(0x50000000, 0x50004000),
        rtc_dram=(0x50000000, 0x50004000),
        rom_stack_start=0x4087E610,
        usable_dram_end=0x4087C610,
        bl_iram_len=0x2D00,
        mmu_page_configurable=True,
        rev_min_full=0,
        rev_max_full=99,
        default_rev=1,
    ),
    _chip(
        "esp32c5",
        23,
        "ESP32-C5",
        "riscv",
        drom=(0x42000000, 0x44000000),
        irom=(0x42000000, 0x44000000),
        dram=(0x40800000, 0x40860000),
        iram=(0x40800000, 0x40860000),
        diram_dram=(0x40800000, 0x40860000),
        diram_iram=(0x40800000, 0x40860000),
        rtc_iram=(0x50000000, 0x50004000),
        rtc_dram=(0x50000000, 0x50004000),
        rom_stack_start=0x4085E5A0,
        usable_dram_end=0x4085C5A0,
        bl_iram_len=0x2A00,
        rev_min_full=100,
        rev_max_full=199,
        default_rev=100,
        bootloader_offset=0x2000,
    ),
):
    CHIPS[_c.name] = _c

BY_ID = {}
for _c in CHIPS.values():
    BY_ID[_c.chip_id] = _c


def get(name):
    # The chip called name ("esp32c3"); ValueError naming the chips there are.
    c = CHIPS.get(name)
    if c is None:
        raise ValueError(
            "unknown chip %r: the simulator has %s" % (name, ", ".join(sorted(CHIPS)))
        )
    return c


def display_name(chip_id):
    c = BY_ID.get(chip_id)
    return c.display if c else "an unknown chip (id %d)" % chip_id

// Each chip's facts that image verification and loading depend on, from ESP-IDF v5.5:
// components/soc/<chip>/include/soc/soc.h (SOC_IROM/DROM_*, SOC_IRAM/DRAM_*, SOC_DIRAM_*,
// SOC_RTC_*, SOC_ROM_STACK_START, SOC_DIRAM_INVERTED), soc_caps.h
// (SOC_RTC_FAST/SLOW_MEM_SUPPORTED, SOC_MMU_PAGE_SIZE_CONFIGURABLE), the MEMORY of
// components/bootloader/subproject/main/ld/<chip>/bootloader.ld (dram_seg, iram_loader_seg),
// and the chip ids of esp_app_format.h. Revisions are major * 100 + minor.

#include <string.h>

#include "soc_host.h"

#define NONE {0, 0}

static const host_chip_t chips[] = {
    {
        .name = "esp32", .chip_id = 0, .default_rev = 300,
        .drom = {0x3F400000, 0x3F800000}, .irom = {0x400D0000, 0x40400000},
        .dram = {0x3FFAE000, 0x40000000}, .iram = {0x40080000, 0x400AA000},
        .diram_dram = {0x3FFE0000, 0x40000000}, .diram_iram = {0x400A0000, 0x400C0000},
        .diram_inverted = true,
        .rtc_iram = {0x400C0000, 0x400C2000}, .rtc_dram = {0x3FF80000, 0x3FF82000},
        .rtc_slow = {0x50000000, 0x50002000},
        .rom_stack_start = 0x3FFE3F20,
        .bl_dram = {0x3FFF0000, 0x3FFF0000 + 0x6000},
        .bl_loader = {0x40078000, 0x40078000 + 0x8000},
    },
    {
        .name = "esp32s2", .chip_id = 2, .default_rev = 100,
        .drom = {0x3F000000, 0x3FF80000}, .irom = {0x40080000, 0x40800000},
        .dram = {0x3FFB0000, 0x40000000}, .iram = {0x40020000, 0x40070000},
        .diram_dram = {0x3FFB0000, 0x40000000}, .diram_iram = {0x40020000, 0x40070000},
        .rtc_iram = {0x40070000, 0x40072000}, .rtc_dram = {0x3FF9E000, 0x3FFA0000},
        .rtc_slow = {0x50000000, 0x50002000},
        .rom_stack_start = 0x3FFFE70C,
        .bl_dram = {0x3FFE5000, 0x3FFE5000 + 0x5B00},
        .bl_loader = {0x4004E000, 0x4004E000 + 0x7000},
    },
    {
        // bootloader.ld: dram_seg = [usable_dram_end 0x3fce9700 - 0x2000 - 0x5000, +0x5000),
        // iram_loader_seg = 0x403CB700 (its ASSERT), 0x7000 long
        .name = "esp32s3", .chip_id = 9, .default_rev = 2,
        .drom = {0x3C000000, 0x3E000000}, .irom = {0x42000000, 0x44000000},
        .dram = {0x3FC88000, 0x3FD00000}, .iram = {0x40370000, 0x403E0000},
        .diram_dram = {0x3FC88000, 0x3FCF0000}, .diram_iram = {0x40378000, 0x403E0000},
        .rtc_iram = {0x600FE000, 0x60100000}, .rtc_dram = {0x600FE000, 0x60100000},
        .rtc_slow = {0x50000000, 0x50002000},
        .rom_stack_start = 0x3FCEB710,
        .bl_dram = {0x3FCE2700, 0x3FCE7700},
        .bl_loader = {0x403CB700, 0x403CB700 + 0x7000},
    },
    {
        .name = "esp32c2", .chip_id = 12, .default_rev = 200, .mmu_page_configurable = true,
        .drom = {0x3C000000, 0x3C400000}, .irom = {0x42000000, 0x42400000},
        .dram = {0x3FCA0000, 0x3FCE0000}, .iram = {0x4037C000, 0x403C0000},
        .diram_dram = {0x3FCA0000, 0x3FCE0000}, .diram_iram = {0x40380000, 0x403C0000},
        .rtc_iram = NONE, .rtc_dram = NONE, .rtc_slow = NONE,
        .rom_stack_start = 0x3FCDEB70,
        .bl_dram = {0x3FCD5B70, 0x3FCDAB70},
        .bl_loader = {0x403AEB70, 0x403AEB70 + 0x7000},
    },
    {
        .name = "esp32c3", .chip_id = 5, .default_rev = 4,
        .drom = {0x3C000000, 0x3C800000}, .irom = {0x42000000, 0x42800000},
        .dram = {0x3FC80000, 0x3FCE0000}, .iram = {0x4037C000, 0x403E0000},
        .diram_dram = {0x3FC80000, 0x3FCE0000}, .diram_iram = {0x40380000, 0x403E0000},
        .rtc_iram = {0x50000000, 0x50002000}, .rtc_dram = {0x50000000, 0x50002000},
        .rtc_slow = NONE,
        .rom_stack_start = 0x3FCDE710,
        .bl_dram = {0x3FCD5710, 0x3FCDA710},
        .bl_loader = {0x403CE710, 0x403CE710 + 0x7000},
    },
    {
        // SOC_IROM_HIGH = SOC_IROM_LOW + (SOC_MMU_PAGE_SIZE << 8), 64 KB pages; DROM = IROM
        .name = "esp32c6", .chip_id = 13, .default_rev = 1, .mmu_page_configurable = true,
        .drom = {0x42000000, 0x43000000}, .irom = {0x42000000, 0x43000000},
        .dram = {0x40800000, 0x40880000}, .iram = {0x40800000, 0x40880000},
        .diram_dram = {0x40800000, 0x40880000}, .diram_iram = {0x40800000, 0x40880000},
        .rtc_iram = {0x50000000, 0x50004000}, .rtc_dram = {0x50000000, 0x50004000},
        .rtc_slow = NONE,
        .rom_stack_start = 0x4087E610,
        .bl_dram = {0x40875610, 0x4087A610},
        .bl_loader = {0x4086E610, 0x4086E610 + 0x7000},
    },
    {
        .name = "esp32c5", .chip_id = 23, .default_rev = 100,
        .drom = {0x42000000, 0x44000000}, .irom = {0x42000000, 0x44000000},
        .dram = {0x40800000, 0x40860000}, .iram = {0x40800000, 0x40860000},
        .diram_dram = {0x40800000, 0x40860000}, .diram_iram = {0x40800000, 0x40860000},
        .rtc_iram = {0x50000000, 0x50004000}, .rtc_dram = {0x50000000, 0x50004000},
        .rtc_slow = NONE,
        .rom_stack_start = 0x4085E5A0,
        .bl_dram = {0x408555A0, 0x4085A5A0},
        .bl_loader = {0x4084E5A0, 0x4084E5A0 + 0x7000},
    },
};

const host_chip_t *host_chip_by_name(const char *name) {
    for (size_t i = 0; i < sizeof(chips) / sizeof(chips[0]); i++) {
        if (strcmp(chips[i].name, name) == 0) {
            return &chips[i];
        }
    }
    return NULL;
}

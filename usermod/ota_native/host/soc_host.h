// Each chip's memory map (soc.h) and its 2nd stage bootloader's RAM (bootloader.ld), as the host
// backend's image checks need them (soc_host.c). The lowest file of the host backend: it uses
// none of the others. Not an ESP-IDF header; nothing outside host/ uses it.
#ifndef OTA_HOST_SOC_HOST_H
#define OTA_HOST_SOC_HOST_H

#include <stdbool.h>
#include <stdint.h>

typedef struct {
    uint32_t lo, hi; // [lo, hi); {0, 0}: the chip has no such memory
} host_range_t;

typedef struct {
    const char *name; // "esp32c3", as in "<flash>.state"
    uint16_t chip_id; // esp_chip_id_t
    unsigned default_rev; // revision of a simulated chip whose state names none
    bool mmu_page_configurable; // SOC_MMU_PAGE_SIZE_CONFIGURABLE
    bool diram_inverted; // SOC_DIRAM_INVERTED
    host_range_t drom, irom, dram, iram, diram_dram, diram_iram, rtc_iram, rtc_dram, rtc_slow;
    uint32_t rom_stack_start;
    host_range_t bl_dram, bl_loader; // _dram_start.._dram_end, _loader_text_start.._end
} host_chip_t;

// The chip of that name, NULL if the host backend does not know it.
const host_chip_t *host_chip_by_name(const char *name);

#endif

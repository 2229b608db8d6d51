// What the host backend's files share: each file stands for one ESP-IDF component (see
// ota_host.c), over one simulated device. Not an ESP-IDF header; nothing outside host/ uses it.
#ifndef OTA_HOST_PRIV_H
#define OTA_HOST_PRIV_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "esp_err.h"
#include "esp_partition.h"

#define SECTOR (4096u)
#define BLOCK (65536u)
#define ESP_ERR_IMAGE_INVALID (0x2002)
#define MIN(a, b) ((a) < (b) ? (a) : (b))
#define ALIGN_UP(n, a) (((n) + (a) - 1) / (a) * (a))

// The emulated chip's operations are never inlined, so that profilers (bench/cpu.py) can tell
// the emulation's cost from the code under test.
#define EMULATION __attribute__((noinline))

// soc_host.c: a chip's memory map (soc.h), its 2nd stage bootloader's RAM (bootloader.ld).
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

const host_chip_t *host_chip_by_name(const char *name);

// ota_host.c: the simulated device, from "<flash>.state" (sim/espsim/device.py).
typedef struct {
    char path[480];
    const esp_partition_t *running;
    const host_chip_t *chip; // NULL: a chip the host backend does not know
    uint16_t chip_id;
    unsigned chip_rev;
    bool rollback;
    unsigned idf;
    bool debugger; // a JTAG debugger is attached (esp_cpu_dbgr_is_attached())
    void (*restart_hook)(void);
} ota_host_device_t;

extern ota_host_device_t ota_host_device;
// Opens $ESPSIM_FLASH on first use; false (with a message) when there is none.
bool ota_host_ready(void);

// flash_host.c: the SPI flash chip (esp_flash_*), over the flash file.
esp_err_t host_flash_open(const char *path);
void host_flash_close(void);
uint32_t host_flash_size(void);
esp_err_t host_flash_read(uint32_t addr, void *buf, size_t n);
esp_err_t host_flash_erase_region(uint32_t start, uint32_t len);
esp_err_t host_flash_program(uint32_t addr, const uint8_t *data, size_t len);

// esp_partition_host.c: the partition table.
esp_err_t host_partitions_load(void);
void host_partitions_clear(void);
const esp_partition_t *host_partition_app_at(uint32_t address);

// app_update_host.c: esp_ota_* handles.
void host_ota_handles_clear(void);

#endif

// The simulated device under the host backend (flash_host.c): its SPI flash chip (the flash
// file) and what "<flash>.state" says of it (sim/espsim/device.py), the power-cut switch and
// weak cell of tests, and the constants the files above share. Of the host backend only
// soc_host.c is below it; esp_partition_host.c, esp_image_format_host.c, app_update_host.c and
// ota_host.c are above. Not an ESP-IDF header; outside host/ only through ota_host.h.
#ifndef OTA_HOST_FLASH_HOST_H
#define OTA_HOST_FLASH_HOST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "esp_err.h"
#include "soc_host.h"

#define SECTOR (4096u)
#define BLOCK (65536u)
#define ESP_ERR_IMAGE_INVALID (0x2002) // bootloader_support's, named by esp_err_to_name()
#ifndef MIN
#define MIN(a, b) ((a) < (b) ? (a) : (b))
#endif
#ifndef ALIGN_UP
#define ALIGN_UP(n, a) (((n) + (a) - 1) / (a) * (a))
#endif

// The emulated chip's operations are never inlined, so that profilers (bench/cpu.py) can tell
// the emulation's cost from the code under test.
#define EMULATION __attribute__((noinline))

// The simulated device, from "<flash>.state" and the environment.
typedef struct {
    char path[480]; // the flash file
    uint32_t running; // flash address of the running app (0: none)
    const host_chip_t *chip; // NULL: a chip the host backend does not know
    uint16_t chip_id;
    unsigned chip_rev;
    bool rollback; // CONFIG_BOOTLOADER_APP_ROLLBACK_ENABLE
    unsigned idf; // ESP-IDF version whose behaviour to follow: 0x0505, 0x0504 or 0x0503
    bool debugger; // a JTAG debugger is attached (esp_cpu_dbgr_is_attached())
    void (*restart_hook)(void); // esp_restart() calls it first
} host_device_t;

extern host_device_t host_device;

// Open a flash file and its .state; the device is then ready.
esp_err_t host_device_open(const char *path);
void host_device_close(void);
// Opens $ESPSIM_FLASH on first use; false (with a message) when there is none.
bool host_device_ready(void);

// The SPI flash chip (esp_flash_*), over the flash file.
uint32_t host_flash_size(void);
esp_err_t host_flash_read(uint32_t addr, void *buf, size_t n);
esp_err_t host_flash_erase_region(uint32_t start, uint32_t len);
esp_err_t host_flash_program(uint32_t addr, const uint8_t *data, size_t len);

typedef struct {
    uint32_t erase_4k;
    uint32_t erase_64k;
    uint32_t program_pages;
    uint32_t program_bytes;
    uint32_t read_ops;
    uint32_t read_bytes;
} host_flash_counts_t;

// Flash operations so far, by kind (ota_host.h tells more of these four).
host_flash_counts_t *host_flash_counts(void);
void host_flash_cut_after(long n);
bool host_flash_powered(void);
void host_flash_flip_after_program(uint32_t addr, uint8_t mask);

#endif

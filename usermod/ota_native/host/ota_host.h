// The host backend: ESP-IDF's esp_partition_* and esp_ota_* functions (v5.3-v5.5 behaviour) over
// a flash image file in the simulator's format, so that the OTA core runs on a PC: in C tests and
// in MicroPython's unix port.
//
// The flash file is $ESPSIM_FLASH (or the path given to ota_host_open()). The running
// partition, chip model and revision and rollback support come from "<flash>.state", written by
// the simulator's bootloader (sim/espsim/device.py). $ESPSIM_CUT_AFTER=N arms the power-cut
// switch; $OTA_HOST_IDF=5.4 selects ESP-IDF 5.4 behaviour (esp_ota_begin() then leaves the
// inactive otadata entry alone), 5.3 that of v5.3.0-v5.3.2 as well (no esp_ota_resume());
// the default is 5.5.
//
// This is the top of the host backend, for tests, the simulator's ctypes library and the unix
// port's binding (ota_host.c): none of the files below includes it. They depend one way, as
// ESP-IDF's components do: soc_host.c <- flash_host.c (spi_flash: the device and its flash) <-
// esp_partition_host.c <- esp_image_format_host.c (bootloader_support) <- app_update_host.c.
#ifndef OTA_HOST_H
#define OTA_HOST_H

#include <stdbool.h>
#include <stdint.h>
#include "esp_err.h"
#include "esp_partition.h"
#include "flash_host.h"

// Erases (4 KB, 64 KB), page programs and bytes programmed, reads and bytes read.
typedef host_flash_counts_t ota_host_counts_t;

// Open a flash image (and its .state file). Returns ESP_OK or an error.
esp_err_t ota_host_open(const char *path);
void ota_host_close(void);
// Flash operations so far, by kind.
const ota_host_counts_t *ota_host_counts(void);
void ota_host_reset_counts(void);
// Cut the power after n more erase/program operations (-1: never). The interrupted one is left
// half done; from then on every flash operation fails with ESP_ERR_FLASH_OP_FAIL. (Armed by
// $ESPSIM_CUT_AFTER instead, the cut ends the process with status 3, like a board losing power.)
void ota_host_cut_after(long n);
bool ota_host_powered(void);
// A weak cell: the next page program that covers flash address addr leaves the bits of mask
// in that byte flipped (inverted) after it completes, so that a later read differs from what was
// written. Once; ota_host_open() clears it.
void ota_host_flip_after_program(uint32_t addr, uint8_t mask);
// ESP-IDF version whose behaviour to follow: 0x0505 (default), 0x0504 or 0x0503.
void ota_host_set_idf(unsigned version);
// Attach or detach a JTAG debugger (esp_cpu_dbgr_is_attached()): while one is attached,
// esp_image_verify() compares neither the checksum nor the appended SHA-256, as on the chip.
// ota_host_open() detaches it.
void ota_host_set_debugger(bool attached);
// esp_image_verify(ESP_IMAGE_VERIFY) of the app in a partition, for the chip and revision of
// the simulated device: ESP_OK, ESP_ERR_IMAGE_INVALID (0x2002), ESP_FAIL (wrong chip or chip
// revision) or a flash error.
esp_err_t ota_host_verify_image(const esp_partition_t *p);
// bootloader_load_image() of the app in a partition, without the copying: the checks of
// ota_host_verify_image() and the 2nd stage bootloader's load address checks for this chip.
esp_err_t ota_host_load_image(const esp_partition_t *p);
// esp_restart() calls this; by default it records "running=0" (the simulator must boot the
// device) and exits the process.
void ota_host_on_restart(void (*hook)(void));

#endif

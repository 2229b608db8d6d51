// Host backend: the ESP-IDF functions the OTA core calls, with ESP-IDF's behaviour, over a flash
// image file, so that the core runs on a PC (C tests, MicroPython's unix port). One file per
// ESP-IDF component it stands for, ESP-IDF v5.3-v5.5:
//   soc_host.c              components/soc/<chip>/include/soc/soc.h and the bootloader's
//                           bootloader.ld: each chip's memory map
//   flash_host.c            components/spi_flash/esp_flash_api.c (the flash chip, power cuts)
//   esp_partition_host.c    components/esp_partition (partition.c, partition_target.c)
//   esp_image_format_host.c components/bootloader_support (esp_image_format.c,
//                           bootloader_common_loader.c): esp_image_verify() and the
//                           bootloader's load checks
//   app_update_host.c       components/app_update/esp_ota_ops.c (esp_ota_*, otadata)
// Each uses only the files listed above it, as the ESP-IDF components they stand for depend on
// each other; flash_host.c also holds the simulated device: its "<flash>.state" (written by the
// simulator, sim/espsim/device.py), esp_restart(), esp_err_to_name() and
// esp_cpu_dbgr_is_attached().
// This file is on top of them all, for tests, the simulator's ctypes library and the unix
// port's binding: ota_host.h's setup of the device (opening a flash file, the ESP-IDF version
// to follow, a debugger) and fault injection (power cuts, a weak cell). Nothing below uses it.

#include <string.h>

#include "app_update_host.h"
#include "esp_image_format_host.h"
#include "esp_partition_host.h"
#include "flash_host.h"
#include "ota_host.h"

esp_err_t ota_host_open(const char *path) {
    ota_host_close();
    esp_err_t err = host_device_open(path);
    if (err == ESP_OK) {
        err = host_partitions_load();
    }
    if (err != ESP_OK) {
        ota_host_close();
    }
    return err;
}

void ota_host_close(void) {
    host_device_close();
    host_partitions_clear();
    host_ota_handles_clear();
}

const ota_host_counts_t *ota_host_counts(void) {
    return host_flash_counts();
}

void ota_host_reset_counts(void) {
    memset(host_flash_counts(), 0, sizeof(ota_host_counts_t));
}

void ota_host_cut_after(long n) {
    host_flash_cut_after(n);
}

bool ota_host_powered(void) {
    return host_flash_powered();
}

void ota_host_flip_after_program(uint32_t addr, uint8_t mask) {
    host_flash_flip_after_program(addr, mask);
}

void ota_host_set_idf(unsigned version) {
    host_device.idf = version;
}

void ota_host_set_debugger(bool attached) {
    host_device.debugger = attached;
}

esp_err_t ota_host_verify_image(const esp_partition_t *p) {
    return host_image_verify(p);
}

esp_err_t ota_host_load_image(const esp_partition_t *p) {
    return host_image_load(p);
}

void ota_host_on_restart(void (*hook)(void)) {
    host_device.restart_hook = hook;
}

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
// This file is the simulated device itself: its flash file and "<flash>.state" (written by
// the simulator, sim/espsim/device.py), esp_restart(), esp_err_to_name() and
// esp_cpu_dbgr_is_attached().

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "esp_cpu.h"
#include "esp_ota_ops.h"
#include "esp_system.h"
#include "ota_host.h"
#include "ota_host_priv.h"

ota_host_device_t ota_host_device = { .idf = 0x0505 };
static bool opened;

// ---- Opening the device

// <flash>.state: key=value lines (sim/espsim/device.py)
static uint32_t read_state(void) {
    uint32_t running = 0;
    bool rev_given = false;
    ota_host_device.chip = host_chip_by_name("esp32");
    ota_host_device.chip_rev = 0;
    ota_host_device.rollback = true;
    char p[512], line[128];
    snprintf(p, sizeof(p), "%s.state", ota_host_device.path);
    FILE *f = fopen(p, "r");
    while (f && fgets(line, sizeof(line), f)) {
        char *eq = strchr(line, '=');
        if (eq == NULL) {
            continue;
        }
        *eq = 0;
        char *val = eq + 1;
        val[strcspn(val, "\r\n")] = 0;
        if (strcmp(line, "running") == 0) {
            running = strtoul(val, NULL, 0);
        } else if (strcmp(line, "chip") == 0) {
            ota_host_device.chip = host_chip_by_name(val);
        } else if (strcmp(line, "chip_rev") == 0) {
            ota_host_device.chip_rev = strtoul(val, NULL, 0);
            rev_given = true;
        } else if (strcmp(line, "rollback") == 0) {
            ota_host_device.rollback = strtoul(val, NULL, 0) != 0;
        }
    }
    if (f) {
        fclose(f);
    }
    const host_chip_t *chip = ota_host_device.chip;
    ota_host_device.chip_id = chip ? chip->chip_id : 0xFFFF; // ESP_CHIP_ID_INVALID
    if (!rev_given) {
        ota_host_device.chip_rev = chip ? chip->default_rev : 0;
    }
    return running;
}

esp_err_t ota_host_open(const char *path) {
    ota_host_close();
    snprintf(ota_host_device.path, sizeof(ota_host_device.path), "%s", path);
    esp_err_t err = host_flash_open(path);
    if (err != ESP_OK) {
        return err;
    }
    opened = true;
    ota_host_device.debugger = false;
    const char *idf = getenv("OTA_HOST_IDF");
    ota_host_device.idf = idf && strncmp(idf, "5.3", 3) == 0 ? 0x0503
        : idf && strncmp(idf, "5.4", 3) == 0 ? 0x0504 : 0x0505;
    uint32_t running = read_state();
    err = host_partitions_load();
    if (err != ESP_OK) {
        ota_host_close();
        return err;
    }
    ota_host_device.running = host_partition_app_at(running);
    return ESP_OK;
}

void ota_host_close(void) {
    host_flash_close();
    opened = false;
    host_partitions_clear();
    ota_host_device.running = NULL;
    host_ota_handles_clear();
}

bool ota_host_ready(void) {
    if (!opened) {
        const char *path = getenv("ESPSIM_FLASH");
        if (path == NULL || ota_host_open(path) != ESP_OK) {
            fprintf(stderr, "ota_host: set ESPSIM_FLASH to a simulated flash image\n");
            return false;
        }
    }
    return true;
}

void ota_host_set_idf(unsigned version) {
    ota_host_device.idf = version;
}

void ota_host_set_debugger(bool attached) {
    ota_host_device.debugger = attached;
}

bool esp_cpu_dbgr_is_attached(void) {
    return ota_host_device.debugger;
}

void ota_host_on_restart(void (*hook)(void)) {
    ota_host_device.restart_hook = hook;
}

const char *esp_err_to_name(esp_err_t code) {
    static const struct {
        esp_err_t code;
        const char *name;
    } names[] = {
        {ESP_OK, "ESP_OK"}, {ESP_FAIL, "ESP_FAIL"}, {ESP_ERR_NO_MEM, "ESP_ERR_NO_MEM"},
        {ESP_ERR_INVALID_ARG, "ESP_ERR_INVALID_ARG"},
        {ESP_ERR_INVALID_STATE, "ESP_ERR_INVALID_STATE"},
        {ESP_ERR_INVALID_SIZE, "ESP_ERR_INVALID_SIZE"}, {ESP_ERR_NOT_FOUND, "ESP_ERR_NOT_FOUND"},
        {ESP_ERR_NOT_SUPPORTED, "ESP_ERR_NOT_SUPPORTED"}, {ESP_ERR_TIMEOUT, "ESP_ERR_TIMEOUT"},
        {ESP_ERR_NOT_ALLOWED, "ESP_ERR_NOT_ALLOWED"},
        {ESP_ERR_FLASH_OP_FAIL, "ESP_ERR_FLASH_OP_FAIL"},
        {ESP_ERR_OTA_PARTITION_CONFLICT, "ESP_ERR_OTA_PARTITION_CONFLICT"},
        {ESP_ERR_OTA_SELECT_INFO_INVALID, "ESP_ERR_OTA_SELECT_INFO_INVALID"},
        {ESP_ERR_OTA_VALIDATE_FAILED, "ESP_ERR_OTA_VALIDATE_FAILED"},
        {ESP_ERR_OTA_SMALL_SEC_VER, "ESP_ERR_OTA_SMALL_SEC_VER"},
        {ESP_ERR_OTA_ROLLBACK_FAILED, "ESP_ERR_OTA_ROLLBACK_FAILED"},
        {ESP_ERR_OTA_ROLLBACK_INVALID_STATE, "ESP_ERR_OTA_ROLLBACK_INVALID_STATE"},
        {ESP_ERR_IMAGE_INVALID, "ESP_ERR_IMAGE_INVALID"},
    };
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        if (names[i].code == code) {
            return names[i].name;
        }
    }
    return "UNKNOWN ERROR";
}

// The app ends here. The simulator's bootloader decides what runs next (mpota sim boot, or
// machine.reset() in the simulated device).
void esp_restart(void) {
    if (ota_host_device.restart_hook) {
        ota_host_device.restart_hook();
    }
    char p[512];
    snprintf(p, sizeof(p), "%s.state", ota_host_device.path);
    FILE *f = fopen(p, "r");
    char state[1024] = "";
    size_t n = f ? fread(state, 1, sizeof(state) - 1, f) : 0;
    if (f) {
        fclose(f);
    }
    state[n] = 0;
    f = fopen(p, "w");
    if (f) {
        // Keep every line but "running": the device is off until the simulator boots it.
        for (char *line = strtok(state, "\n"); line; line = strtok(NULL, "\n")) {
            fprintf(f, "%s\n", strncmp(line, "running=", 8) == 0 ? "running=0x0" : line);
        }
        fclose(f);
    }
    fprintf(stderr, "esp_restart(): the simulated device is off; boot it with `mpota sim boot`\n");
    exit(0);
}

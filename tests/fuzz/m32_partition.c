// For the 32-bit build of fuzz_delta (size_t of 32 bits, as on the ESP32), without the host
// backend (its mbedtls would be needed for 32 bits too): the old image's partition in memory,
// ota_0 of $FUZZ_FLASH (0x10000, 0x70000 bytes: make_seeds.py's table), and
// esp_partition_read() over it with esp_partition.c's range checks.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "esp_partition.h"

#define OLD_AT (0x10000)
#define OLD_SIZE (0x70000)

static uint8_t old[OLD_SIZE];
static const esp_partition_t part = {
    .type = ESP_PARTITION_TYPE_APP, .subtype = 0x10, .address = OLD_AT, .size = OLD_SIZE,
    .erase_size = 4096, .label = "ota_0",
};

const esp_partition_t *fuzz_m32_old(void) {
    static int loaded;
    if (!loaded) {
        const char *path = getenv("FUZZ_FLASH");
        FILE *f = path ? fopen(path, "rb") : NULL;
        if (f == NULL || fseek(f, OLD_AT, SEEK_SET) != 0 || fread(old, 1, OLD_SIZE, f) != OLD_SIZE) {
            fprintf(stderr, "fuzz: set FUZZ_FLASH to the flash.bin that make_seeds.py made\n");
            exit(2);
        }
        fclose(f);
        loaded = 1;
    }
    return &part;
}

esp_err_t esp_partition_read(const esp_partition_t *p, size_t off, void *dst, size_t size) {
    if (p != &part || off > p->size) {
        return ESP_ERR_INVALID_ARG;
    }
    if (size > p->size - off) {
        return ESP_ERR_INVALID_SIZE;
    }
    memcpy(dst, old + off, size);
    return ESP_OK;
}

// One OTA update through the native core over the host backend, for instruction counting
// under valgrind (bench/cpu.py): cpu_native FLASH IMAGE [CHUNK]
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ota_core.h"
#include "ota_host.h"

static uint8_t buf[4096];

// The update itself: what bench/cpu.py measures (inclusive cost of this function).
__attribute__((noinline)) esp_err_t run_update(const uint8_t *img, size_t len, size_t chunk) {
    ota_core_t s;
    esp_err_t err = ota_core_begin(&s, len, OTA_CORE_CONFIRM);
    for (size_t pos = 0; err == ESP_OK && pos < len; pos += chunk) {
        err = ota_core_write(&s, img + pos, len - pos < chunk ? len - pos : chunk);
    }
    if (err == ESP_OK) {
        err = ota_core_finish(&s, len, NULL, true, true, buf, sizeof(buf));
    }
    ota_core_free(&s);
    return err;
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: %s FLASH IMAGE [CHUNK]\n", argv[0]);
        return 2;
    }
    FILE *f = fopen(argv[2], "rb");
    if (f == NULL) {
        return 2;
    }
    fseek(f, 0, SEEK_END);
    size_t len = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *img = malloc(len);
    if (img == NULL || fread(img, 1, len, f) != len) {
        return 2;
    }
    fclose(f);
    if (ota_host_open(argv[1]) != ESP_OK) {
        return 2;
    }
    esp_err_t err = run_update(img, len, argc > 3 ? (size_t)atoi(argv[3]) : 4096);
    const ota_host_counts_t *c = ota_host_counts();
    printf("err=%d erase_4k=%u erase_64k=%u program_pages=%u read_bytes=%u\n", err, c->erase_4k,
        c->erase_64k, c->program_pages, c->read_bytes);
    free(img);
    return err == ESP_OK ? 0 : 1;
}

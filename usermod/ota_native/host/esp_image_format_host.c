// App image verification: esp_image_verify(ESP_IMAGE_VERIFY) on an app partition, as ESP-IDF's
// components/bootloader_support (esp_image_format.c, bootloader_common_loader.c) applies it,
// v5.3-v5.5.

#include <string.h>

#include "esp_app_format.h"
#include "ota_host.h"
#include "ota_host_priv.h"
#include "ota_sha256.h"

static bool mapped(uint32_t a) {
    return (a >= 0x3F400000 && a < 0x3F800000) || (a >= 0x400D0000 && a < 0x40400000);
}

// esp_image_verify()'s own reads and hashing, apart from the flash emulation and from the code
// under test, for profilers (bench/cpu.py).
EMULATION static esp_err_t image_read(uint32_t addr, void *buf, size_t n) {
    return host_flash_read(addr, buf, n);
}

EMULATION static void image_sha(ota_sha256_t *sha, const uint8_t *data, size_t len) {
    ota_sha256_update(sha, data, len);
}

esp_err_t ota_host_verify_image(const esp_partition_t *p) {
    esp_image_header_t hdr;
    esp_err_t err = image_read(p->address, &hdr, sizeof(hdr));
    if (err != ESP_OK) {
        return err;
    }
    ota_sha256_t sha;
    ota_sha256_init(&sha);
    image_sha(&sha, (const uint8_t *)&hdr, sizeof(hdr));
    err = ESP_ERR_IMAGE_INVALID;
    uint16_t max_rev = hdr.max_chip_rev_full;
    if (hdr.magic != ESP_IMAGE_HEADER_MAGIC || hdr.chip_id != ota_host_device.chip_id
        || ota_host_device.chip_rev < hdr.min_chip_rev_full
        || (max_rev != 0 && max_rev != 0xFFFF && ota_host_device.chip_rev > max_rev)
        || hdr.segment_count > ESP_IMAGE_MAX_SEGMENTS) {
        goto out;
    }
    uint32_t addr = p->address + sizeof(hdr);
    uint8_t checksum = 0xEF;
    uint8_t buf[SECTOR];
    for (int i = 0; i < hdr.segment_count; i++) {
        esp_image_segment_header_t seg;
        if (addr + sizeof(seg) > host_flash_size()) {
            err = ESP_FAIL;
            goto out;
        }
        if ((err = image_read(addr, &seg, sizeof(seg))) != ESP_OK) {
            goto out;
        }
        err = ESP_ERR_IMAGE_INVALID;
        image_sha(&sha, (const uint8_t *)&seg, sizeof(seg));
        uint32_t data = addr + sizeof(seg);
        if (seg.data_len % 4 || seg.data_len >= 0x1000000
            || (mapped(seg.load_addr) && data % BLOCK != seg.load_addr % BLOCK)) {
            goto out;
        }
        if (data > host_flash_size() || seg.data_len > host_flash_size() - data) {
            err = ESP_FAIL;
            goto out;
        }
        for (uint32_t pos = 0; pos < seg.data_len; pos += SECTOR) {
            uint32_t n = MIN(SECTOR, seg.data_len - pos);
            if ((err = image_read(data + pos, buf, n)) != ESP_OK) {
                goto out;
            }
            for (uint32_t k = 0; k < n; k++) {
                checksum ^= buf[k];
            }
            image_sha(&sha, buf, n);
        }
        err = ESP_ERR_IMAGE_INVALID;
        addr = data + seg.data_len;
    }
    uint32_t unpadded = addr - p->address;
    uint32_t pad = ((unpadded + 1 + 15) & ~15u) - unpadded;
    if (addr + pad > host_flash_size()) {
        err = ESP_FAIL;
        goto out;
    }
    if ((err = image_read(addr, buf, pad)) != ESP_OK) {
        goto out;
    }
    err = ESP_ERR_IMAGE_INVALID;
    if (buf[pad - 1] != checksum) {
        goto out;
    }
    image_sha(&sha, buf, pad);
    uint32_t len = unpadded + pad;
    uint8_t stored[OTA_SHA256_LEN], calc[OTA_SHA256_LEN];
    if (hdr.hash_appended) {
        if (p->address + len + OTA_SHA256_LEN > host_flash_size()) {
            err = ESP_FAIL;
            goto out;
        }
        if ((err = image_read(p->address + len, stored, sizeof(stored))) != ESP_OK) {
            goto out;
        }
        err = ESP_ERR_IMAGE_INVALID;
        len += OTA_SHA256_LEN;
    }
    if (len > p->size) {
        goto out;
    }
    if (hdr.hash_appended) {
        ota_sha256_peek(&sha, calc);
        if (memcmp(calc, stored, sizeof(calc)) != 0) {
            goto out;
        }
    }
    err = ESP_OK;
out:
    ota_sha256_free(&sha);
    return err;
}

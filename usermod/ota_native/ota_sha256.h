// SHA-256 over mbedtls, for mbedtls 2.28 and 3.x. On ESP32, ESP-IDF's mbedtls port runs it on
// the SHA hardware (CONFIG_MBEDTLS_HARDWARE_SHA).
#ifndef OTA_SHA256_H
#define OTA_SHA256_H

#include <stddef.h>
#include <stdint.h>
#include "mbedtls/sha256.h"

#define OTA_SHA256_LEN (32)

typedef struct {
    mbedtls_sha256_context ctx;
} ota_sha256_t;

void ota_sha256_init(ota_sha256_t *h);
void ota_sha256_update(ota_sha256_t *h, const uint8_t *data, size_t len);
// Writes the digest of everything so far; h can go on being updated.
void ota_sha256_peek(const ota_sha256_t *h, uint8_t out[OTA_SHA256_LEN]);
// The same, as if the `len` bytes at `more` had been added first; h does not change.
void ota_sha256_peek_more(const ota_sha256_t *h, const uint8_t *more, size_t len,
    uint8_t out[OTA_SHA256_LEN]);
void ota_sha256_free(ota_sha256_t *h);

#endif

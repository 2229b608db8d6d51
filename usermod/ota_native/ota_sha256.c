#include <string.h>
#include "ota_sha256.h"

#if defined(MBEDTLS_VERSION_NUMBER)
#elif __has_include("mbedtls/build_info.h")
#include "mbedtls/build_info.h"
#else
#include "mbedtls/version.h"
#endif

// mbedtls 3 dropped the *_ret names of 2.x; the 2.x names without _ret return void there.
#if MBEDTLS_VERSION_NUMBER >= 0x03000000
#define SHA_STARTS mbedtls_sha256_starts
#define SHA_UPDATE mbedtls_sha256_update
#define SHA_FINISH mbedtls_sha256_finish
#else
#define SHA_STARTS mbedtls_sha256_starts_ret
#define SHA_UPDATE mbedtls_sha256_update_ret
#define SHA_FINISH mbedtls_sha256_finish_ret
#endif

void ota_sha256_init(ota_sha256_t *h) {
    mbedtls_sha256_init(&h->ctx);
    SHA_STARTS(&h->ctx, 0);
}

void ota_sha256_update(ota_sha256_t *h, const uint8_t *data, size_t len) {
    SHA_UPDATE(&h->ctx, data, len);
}

void ota_sha256_peek_more(const ota_sha256_t *h, const uint8_t *more, size_t len,
    uint8_t out[OTA_SHA256_LEN]) {
    mbedtls_sha256_context copy;
    mbedtls_sha256_init(&copy);
    mbedtls_sha256_clone(&copy, &h->ctx);
    if (len > 0) {
        SHA_UPDATE(&copy, more, len);
    }
    SHA_FINISH(&copy, out);
    mbedtls_sha256_free(&copy);
}

void ota_sha256_peek(const ota_sha256_t *h, uint8_t out[OTA_SHA256_LEN]) {
    ota_sha256_peek_more(h, NULL, 0, out);
}

void ota_sha256_free(ota_sha256_t *h) {
    mbedtls_sha256_free(&h->ctx);
}

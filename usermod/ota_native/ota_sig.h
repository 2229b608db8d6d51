// ECDSA P-256 signature verification over mbedtls, for signed OTA manifests. Plain C: no
// MicroPython header.
#ifndef OTA_SIG_H
#define OTA_SIG_H

#include <stddef.h>
#include <stdint.h>
#include "esp_err.h"

// ESP_OK when sig (DER ECDSA-Sig-Value) is a valid signature of the 32-byte SHA-256 digest by
// key (DER SubjectPublicKeyInfo of a P-256 key); OTA_ERR_SIGNATURE when it is not;
// OTA_ERR_KEY when key is not a P-256 public key.
esp_err_t ota_sig_verify(const uint8_t *key, size_t key_len, const uint8_t *digest,
    const uint8_t *sig, size_t sig_len);

#endif

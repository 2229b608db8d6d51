#include "mbedtls/ecp.h"
#include "mbedtls/pk.h"
#include "ota_core.h"
#include "ota_sig.h"

#if defined(MBEDTLS_VERSION_NUMBER)
#elif __has_include("mbedtls/build_info.h")
#include "mbedtls/build_info.h"
#else
#include "mbedtls/version.h"
#endif

#if MBEDTLS_VERSION_NUMBER >= 0x03000000
#define OTA_ECP_GROUP_ID(ec) ((ec)->MBEDTLS_PRIVATE(grp).id)
#else
#define OTA_ECP_GROUP_ID(ec) ((ec)->grp.id)
#endif

esp_err_t ota_sig_verify(const uint8_t *key, size_t key_len, const uint8_t *digest,
    const uint8_t *sig, size_t sig_len) {
    mbedtls_pk_context pk;
    mbedtls_pk_init(&pk);
    esp_err_t err = OTA_ERR_KEY;
    if (mbedtls_pk_parse_public_key(&pk, key, key_len) == 0
        && mbedtls_pk_get_type(&pk) == MBEDTLS_PK_ECKEY
        && OTA_ECP_GROUP_ID(mbedtls_pk_ec(pk)) == MBEDTLS_ECP_DP_SECP256R1) {
        err = mbedtls_pk_verify(&pk, MBEDTLS_MD_SHA256, digest, 32, sig, sig_len) == 0
            ? ESP_OK : OTA_ERR_SIGNATURE;
    }
    mbedtls_pk_free(&pk);
    return err;
}

// Fuzz target: the check of an image's first bytes (ota_core_check_head(), usermod/ota_native/
// ota_core.c), run on the first bytes received before anything is erased, and the error text
// the core gives for its result. Input: u16 chip id, then the head (any length; an exact-size
// heap copy, so that a read past it is caught).
#include "ota_core.h"

#include "fuzz_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 2) {
        return 0;
    }
    uint16_t chip = (uint16_t)(data[0] | data[1] << 8);
    uint8_t *head = fuzz_dup(data + 2, size - 2);
    size_t len = size - 2;
    esp_err_t err = ota_core_check_head(head, len, chip);
    if (err == ESP_OK) {
        FUZZ_CHECK(len >= OTA_CORE_HEAD && head[0] == 0xE9);
        FUZZ_CHECK((head[12] | head[13] << 8) == chip && head[1] <= 16);
    } else {
        FUZZ_CHECK(err == OTA_ERR_NOT_APP_IMAGE || err == OTA_ERR_TOO_SHORT
            || err == OTA_ERR_WRONG_CHIP || err == OTA_ERR_NOT_APP_DESC);
        FUZZ_CHECK(len >= OTA_CORE_HEAD || err == OTA_ERR_TOO_SHORT
            || err == OTA_ERR_NOT_APP_IMAGE);
    }
    // The same bytes with one more or one fewer: an image cut short is never accepted.
    if (len > 0) {
        FUZZ_CHECK(len - 1 >= OTA_CORE_HEAD || ota_core_check_head(head, len - 1, chip) != ESP_OK);
    }
    // The sanitizers are on (tests/test_fuzz.py): $FUZZ_SELFTEST=asan reads a byte past the
    // head, =ubsan overflows an int.
    static const char *selftest;
    if (selftest == NULL) {
        selftest = getenv("FUZZ_SELFTEST") ? getenv("FUZZ_SELFTEST") : "";
    }
    if (strcmp(selftest, "asan") == 0) {
        volatile uint8_t past = head[len];
        (void)past;
    } else if (strcmp(selftest, "ubsan") == 0) {
        volatile int big = 0x7FFFFFFF;
        big = big + (int)(len + 1);
    }
    char msg[320];
    ota_core_message(NULL, err, len, NULL, msg, sizeof(msg));
    FUZZ_CHECK(strlen(msg) < sizeof(msg));
    free(head);
    return 0;
}

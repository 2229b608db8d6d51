// Fuzz target: a whole writing session of the core (usermod/ota_native/ota_core.c) through the
// host backend, on the simulated 1 MB ESP32 of make_seeds.py (running ota_0; the update goes to
// ota_1), put back as it was before each run. Input: a 16-byte header, then the image bytes.
//   0  mode: bit 0 OTA_CORE_CONFIRM, 1 expected length given to begin, 2 verify, 3 set_boot,
//      4 some pieces through ota_core_space()/commit(), 5 expected length given to finish,
//      6 resume (ota_core_begin_at) at the offset below, after writing the image's bytes before
//      it to the slot as an earlier session would have, 7 the input's last 32 bytes are the
//      SHA-256 that finish() expects (not part of the image)
//   1  seed of the piece sizes, 2 u32 expected length, 6 u32 resume offset, 10 u32 the end
//      given to ota_core_assume_erased() (0: not called), 14 spare
// Invariants: the flash outside ota_1 and otadata never changes, and the boot partition only
// by a finish() with set_boot that succeeds; after finish() succeeds the slot holds exactly
// the bytes received (and their SHA-256 is the one expected); no esp_ota handle is left open;
// an aborted session accepts nothing more.
#include "ota_core.h"

#include "fuzz_common.h"

#define HEADER (16)

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc;
    (void)argv;
    fuzz_device_open();
    return 0;
}

// Is the flash as make_seeds.py left it, but for [a0, a1) and [b0, b1)?
static void check_flash_outside(uint32_t a0, uint32_t a1, uint32_t b0, uint32_t b1) {
    static uint8_t now[1 << 20];
    FUZZ_CHECK(fuzz_dev.len <= sizeof(now));
    FUZZ_CHECK(pread(fuzz_dev.fd, now, fuzz_dev.len, 0) == (ssize_t)fuzz_dev.len);
    for (size_t i = 0; i < fuzz_dev.len; i++) {
        if ((i >= a0 && i < a1) || (i >= b0 && i < b1)) {
            continue;
        }
        if (now[i] != fuzz_dev.pristine[i]) {
            fprintf(stderr, "flash byte 0x%zx changed outside ota_1 and otadata\n", i);
            abort();
        }
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < HEADER) {
        return 0;
    }
    fuzz_device_reset();
    uint8_t mode = data[0];
    uint32_t seed = data[1] | 0x300u;
    size_t expect = fuzz_u32(data + 2), resume = fuzz_u32(data + 6), erased = fuzz_u32(data + 10);
    const uint8_t *img = data + HEADER;
    size_t len = size - HEADER;
    const uint8_t *sha = NULL;
    if ((mode & 0x80) && len >= OTA_SHA256_LEN) {
        len -= OTA_SHA256_LEN;
        sha = img + len;
    }
    const esp_partition_t *slot = esp_partition_find_first(ESP_PARTITION_TYPE_APP,
        ESP_PARTITION_SUBTYPE_ANY, "ota_1");
    const esp_partition_t *od = esp_partition_find_first(ESP_PARTITION_TYPE_DATA,
        ESP_PARTITION_SUBTYPE_DATA_OTA, NULL);
    FUZZ_CHECK(slot != NULL && od != NULL);
    const esp_partition_t *boot = esp_ota_get_boot_partition();
    static ota_core_t s;
    esp_err_t err;
    if ((mode & 0x40) && resume % 4096 == 0 && resume <= len && resume <= slot->size) {
        // An earlier session wrote the image's first `resume` bytes.
        size_t er = (resume + 4095) / 4096 * 4096;
        FUZZ_CHECK(esp_partition_erase_range(slot, 0, er) == ESP_OK);
        FUZZ_CHECK(esp_partition_write(slot, 0, img, resume) == ESP_OK);
        err = ota_core_begin_at(&s, mode & 2 ? expect : 0, mode & 1, resume, NULL, 0);
        if (err == ESP_OK && erased) {
            esp_err_t e = ota_core_assume_erased(&s, erased);
            FUZZ_CHECK(e == ESP_OK || e == ESP_ERR_INVALID_ARG);
        }
    } else {
        resume = 0;
        err = ota_core_begin(&s, mode & 2 ? expect : 0, mode & 1);
    }
    size_t pos = resume;
    while (err == ESP_OK && pos < len) {
        size_t n = fuzz_piece(&seed, len - pos);
        size_t room = 0;
        uint8_t *p = (mode & 0x10) && (fuzz_rand(&seed) & 1) ? ota_core_space(&s, &room) : NULL;
        if (p != NULL) {
            FUZZ_CHECK(room > 0 && room <= sizeof(s.buf) && p >= s.buf
                && p + room <= s.buf + sizeof(s.buf));
            n = n < room ? n : room;
            memcpy(p, img + pos, n);
            err = ota_core_commit(&s, n);
        } else {
            uint8_t *piece = fuzz_dup(img + pos, n);
            err = ota_core_write(&s, piece, n);
            free(piece);
        }
        FUZZ_CHECK(err == ESP_OK || s.state == OTA_CORE_ABORTED);
        if (err == ESP_OK) {
            pos += n;
            FUZZ_CHECK(s.received == pos && s.written + s.fill == pos);
            FUZZ_CHECK(s.written % 4096 == 0 && s.written <= slot->size);
            FUZZ_CHECK(ota_core_erased(&s) >= s.written);
        }
    }
    if (err == ESP_OK) {
        err = ota_core_finish(&s, mode & 0x20 ? expect : 0, sha, mode & 4, mode & 8, NULL, 0);
        FUZZ_CHECK(!s.handle_open);
        if (err == ESP_OK) {
            FUZZ_CHECK(s.state == OTA_CORE_DONE && s.received == len && len >= OTA_CORE_HEAD);
            uint8_t *back = malloc(len);
            FUZZ_CHECK(esp_partition_read(slot, 0, back, len) == ESP_OK);
            FUZZ_CHECK(memcmp(back, img, len) == 0);
            free(back);
            if (sha) {
                uint8_t got[OTA_SHA256_LEN];
                ota_core_sha(&s, got);
                FUZZ_CHECK(memcmp(got, sha, OTA_SHA256_LEN) == 0);
            }
            if (mode & 0x20 && expect) {
                FUZZ_CHECK(len == expect);
            }
        }
    }
    if (err != ESP_OK) {
        FUZZ_CHECK(s.state != OTA_CORE_DONE);
        uint8_t b = 0xE9;
        FUZZ_CHECK(ota_core_write(&s, &b, 1) == OTA_ERR_CLOSED);
    }
    ota_core_abort(&s);
    FUZZ_CHECK(!s.handle_open);
    ota_core_free(&s);
    char msg[320];
    ota_core_message(&s, err, expect, sha, msg, sizeof(msg));
    FUZZ_CHECK(strlen(msg) < sizeof(msg));
    const esp_partition_t *now = esp_ota_get_boot_partition();
    FUZZ_CHECK(now == boot || (err == ESP_OK && (mode & 8) && now == slot));
    check_flash_outside(slot->address, slot->address + slot->size, od->address,
        od->address + od->size);
    return 0;
}

// C tests of the OTA core (usermod/ota_native/ota_core.c) over the host backend.
//
//   test_ota_core FIXTURES [TEST...]     run all tests, or the named ones
//   test_ota_core --list                 list the tests
//
// FIXTURES is a directory prepared by tests/test_native_core.py: flash.bin (+ .state), a
// simulated ESP32 running MicroPython v1.22.0 from ota_0, and image files (see fixture()).
// Each test works on its own copy of the flash.

#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "esp_ota_ops.h"
#include "ota_core.h"
#include "ota_host.h"
#include "ota_sha256.h"

#include "check.h"

#define BLOCK (65536u)
#define SLOT (0x180000u)

static const char *fixtures;
static char work[512];
static void save(const char *path, blob_t b) {
    FILE *f = fopen(path, "wb");
    if (f == NULL || fwrite(b.data, 1, b.len, f) != b.len) {
        exit(2);
    }
    fclose(f);
}

static blob_t fixture(const char *name) {
    char p[600];
    snprintf(p, sizeof(p), "%s/%s", fixtures, name);
    return load(p);
}

// A fresh copy of the device for this test, opened by the host backend.
static void fresh_device(void) {
    char p[600];
    snprintf(work, sizeof(work), "%s/work-%s.bin", fixtures, current);
    blob_t flash = fixture("flash.bin"), state = fixture("flash.bin.state");
    save(work, flash);
    snprintf(p, sizeof(p), "%s.state", work);
    save(p, state);
    free(flash.data);
    free(state.data);
    ota_host_cut_after(-1);
    ota_host_set_idf(0x0505);
    if (ota_host_open(work) != ESP_OK) {
        fprintf(stderr, "cannot open %s\n", work);
        exit(2);
    }
    ota_host_reset_counts();
}

static blob_t flash_now(void) {
    return load(work);
}

static const esp_partition_t *part(const char *label) {
    return esp_partition_find_first(ESP_PARTITION_TYPE_ANY, ESP_PARTITION_SUBTYPE_ANY, label);
}

static void sha256(const uint8_t *data, size_t len, uint8_t out[32]) {
    ota_sha256_t h;
    ota_sha256_init(&h);
    ota_sha256_update(&h, data, len);
    ota_sha256_peek(&h, out);
    ota_sha256_free(&h);
}

static uint8_t buf[4096];

// A whole update through the core: begin, write in chunks of `chunk`, finish.
static esp_err_t update(blob_t img, size_t expected, size_t chunk, bool set_boot) {
    ota_core_t s;
    esp_err_t err = ota_core_begin(&s, expected, OTA_CORE_CONFIRM);
    for (size_t pos = 0; err == ESP_OK && pos < img.len; pos += chunk) {
        size_t n = img.len - pos < chunk ? img.len - pos : chunk;
        err = ota_core_write(&s, img.data + pos, n);
    }
    if (err == ESP_OK) {
        uint8_t want[32];
        sha256(img.data, img.len, want);
        err = ota_core_finish(&s, expected, want, true, set_boot, buf, sizeof(buf));
    }
    ota_core_free(&s);
    return err;
}

static bool slot_holds(const char *label, blob_t img) {
    blob_t f = flash_now();
    bool ok = memcmp(f.data + part(label)->address, img.data, img.len) == 0;
    free(f.data);
    return ok;
}

// Everything but ota_1 (the target slot) and otadata, compared with the original device.
static bool untouched_outside_slot(blob_t before, bool otadata_too) {
    blob_t f = flash_now();
    const esp_partition_t *t = part("ota_1"), *od = part("otadata");
    bool ok = f.len == before.len;
    for (size_t a = 0; ok && a < f.len; a += 4096) {
        bool in_slot = a >= t->address && a < t->address + t->size;
        bool in_od = a >= od->address && a < od->address + od->size;
        if (!in_slot && (otadata_too || !in_od)) {
            ok = memcmp(f.data + a, before.data + a, 4096) == 0;
        }
    }
    free(f.data);
    return ok;
}

static const char *boot_label(void) {
    const esp_partition_t *p = esp_ota_get_boot_partition();
    return p ? p->label : "(none)";
}

// ---- Tests

static void test_update_seed_image_known_length(void) {
    fresh_device();
    blob_t img = fixture("new.bin");
    CHECK_EQ(update(img, img.len, 4096, true), ESP_OK);
    CHECK(strcmp(boot_label(), "ota_1") == 0);
    CHECK(slot_holds("ota_1", img));
    esp_ota_img_states_t st;
    CHECK_EQ(esp_ota_get_state_partition(part("ota_1"), &st), ESP_OK);
    CHECK_EQ(st, ESP_OTA_IMG_NEW);
    free(img.data);
}

static void test_chunk_sizes(void) {
    static const size_t sizes[] = {1, 3, 255, 256, 287, 288, 289, 4095, 4096, 4097, 65535, 65536,
                                   65537};
    blob_t img = fixture("small.bin");
    for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
        for (int known = 0; known < 2; known++) {
            fresh_device();
            blob_t before = flash_now();
            CHECK_EQ(update(img, known ? img.len : 0, sizes[i], true), ESP_OK);
            CHECK(slot_holds("ota_1", img));
            CHECK(strcmp(boot_label(), "ota_1") == 0);
            CHECK(untouched_outside_slot(before, false));
            free(before.data);
        }
    }
    free(img.data);
}

// Erases for the seed's 1,525,536-byte image: 24 blocks of 64 KB, known length or not.
static void test_erase_counts(void) {
    blob_t img = fixture("new.bin");
    CHECK_EQ(img.len, 1525536);
    for (int known = 0; known < 2; known++) {
        fresh_device();
        CHECK_EQ(update(img, known ? img.len : 0, 4096, false), ESP_OK);
        const ota_host_counts_t *c = ota_host_counts();
        CHECK_EQ(c->erase_64k, 24);
        CHECK_EQ(c->erase_4k, 0);
        CHECK_EQ(c->program_bytes, img.len);
        // The first 288 bytes go to flash with the rest of their 4 KB: each page once.
        CHECK_EQ(c->program_pages, (img.len + 255) / 256);
        printf("erase counts (%s length): %u x 64 KB, %u x 4 KB; %u pages programmed, "
            "%u bytes read\n", known ? "known" : "unknown", c->erase_64k, c->erase_4k,
            c->program_pages, c->read_bytes);
    }
    free(img.data);
}

// ESP-IDF's own strategies, for comparison: OTA_WITH_SEQUENTIAL_WRITES erases one 4 KB sector
// per 4 KB write, OTA_SIZE_UNKNOWN erases the whole slot.
static void test_esp_ota_erase_strategies(void) {
    blob_t img = fixture("new.bin");
    size_t sizes[] = {OTA_WITH_SEQUENTIAL_WRITES, OTA_SIZE_UNKNOWN};
    uint32_t want4k[] = {373, 0}, want64k[] = {0, 24};
    for (int i = 0; i < 2; i++) {
        fresh_device();
        esp_ota_handle_t hd;
        CHECK_EQ(esp_ota_begin(part("ota_1"), sizes[i], &hd), ESP_OK);
        for (size_t pos = 0; pos < img.len; pos += 4096) {
            size_t n = img.len - pos < 4096 ? img.len - pos : 4096;
            CHECK_EQ(esp_ota_write(hd, img.data + pos, n), ESP_OK);
        }
        CHECK_EQ(esp_ota_end(hd), ESP_OK);
        CHECK_EQ(ota_host_counts()->erase_4k, want4k[i]);
        CHECK_EQ(ota_host_counts()->erase_64k, want64k[i]);
    }
    free(img.data);
}

static void refused_before_erase(const char *file, esp_err_t want, bool at_finish) {
    fresh_device();
    blob_t img = fixture(file), before = flash_now();
    ota_core_t s;
    CHECK_EQ(ota_core_begin(&s, 0, OTA_CORE_CONFIRM), ESP_OK);
    esp_err_t err = ota_core_write(&s, img.data, img.len);
    if (at_finish) {
        CHECK_EQ(err, ESP_OK);
        err = ota_core_finish(&s, 0, NULL, true, true, buf, sizeof(buf));
    }
    CHECK_EQ(err, want);
    CHECK_EQ(s.state, OTA_CORE_ABORTED);
    CHECK_EQ(ota_core_write(&s, img.data, 1), OTA_ERR_CLOSED);
    CHECK_EQ(ota_host_counts()->erase_4k + ota_host_counts()->erase_64k, 0);
    blob_t after = flash_now();
    CHECK(memcmp(after.data, before.data, before.len) == 0);
    ota_core_free(&s);
    free(img.data);
    free(before.data);
    free(after.data);
}

static void test_image_checks_before_any_erase(void) {
    refused_before_erase("s3.bin", OTA_ERR_WRONG_CHIP, false);
    refused_before_erase("bootloader.bin", OTA_ERR_NOT_APP_DESC, false);
    refused_before_erase("merged.bin", OTA_ERR_NOT_APP_DESC, false);
    refused_before_erase("random.bin", OTA_ERR_NOT_APP_IMAGE, false);
    refused_before_erase("table.bin", OTA_ERR_NOT_APP_IMAGE, false);
    refused_before_erase("short.bin", OTA_ERR_TOO_SHORT, true);
    refused_before_erase("empty.bin", OTA_ERR_NO_DATA, true);
}

static void test_too_large(void) {
    fresh_device();
    ota_core_t s;
    CHECK_EQ(ota_core_begin(&s, SLOT + 1, 0), OTA_ERR_TOO_LARGE);
    blob_t big = fixture("big.bin");
    CHECK(big.len > SLOT);
    blob_t before = flash_now();
    CHECK_EQ(update(big, 0, 65536, true), OTA_ERR_TOO_LARGE);
    CHECK(strcmp(boot_label(), "ota_0") == 0);
    CHECK(untouched_outside_slot(before, false));
    free(big.data);
    free(before.data);
}

static void test_length_and_sha_mismatch(void) {
    blob_t img = fixture("small.bin");
    for (int which = 0; which < 3; which++) {
        fresh_device();
        blob_t before = flash_now();
        ota_core_t s;
        CHECK_EQ(ota_core_begin(&s, 0, 0), ESP_OK);
        CHECK_EQ(ota_core_write(&s, img.data, img.len - (which == 2 ? 4096 : 0)), ESP_OK);
        uint8_t sha[32];
        sha256(img.data, img.len, sha);
        if (which == 1) {
            sha[7] ^= 1;
        }
        esp_err_t want = which == 0 ? OTA_ERR_LENGTH : which == 1 ? OTA_ERR_SHA : OTA_ERR_SHA;
        CHECK_EQ(ota_core_finish(&s, which == 0 ? img.len + 1 : 0, sha, true, true, buf,
            sizeof(buf)), want);
        CHECK(strcmp(boot_label(), "ota_0") == 0);
        CHECK(untouched_outside_slot(before, false));
        ota_core_free(&s);
        free(before.data);
    }
    free(img.data);
}

static void test_truncated_image_fails_esp_ota_end(void) {
    fresh_device();
    blob_t img = fixture("small.bin");
    ota_core_t s;
    CHECK_EQ(ota_core_begin(&s, 0, 0), ESP_OK);
    CHECK_EQ(ota_core_write(&s, img.data, img.len - 100), ESP_OK);
    CHECK_EQ(ota_core_finish(&s, 0, NULL, true, true, buf, sizeof(buf)),
        ESP_ERR_OTA_VALIDATE_FAILED);
    CHECK(strcmp(boot_label(), "ota_0") == 0);
    ota_core_free(&s);
    free(img.data);
}

// A byte that esp_image_verify does not cover (the entry address of an image without an
// appended digest) goes bad on the flash: only the read-back catches it.
static void test_readback_verification(void) {
    fresh_device();
    blob_t img = fixture("nodigest.bin");
    ota_core_t s;
    CHECK_EQ(ota_core_begin(&s, 0, 0), ESP_OK);
    CHECK_EQ(ota_core_write(&s, img.data, img.len), ESP_OK);
    FILE *f = fopen(work, "r+b");
    fseek(f, part("ota_1")->address + 5, SEEK_SET); // entry address 0x40080400: 0x04 -> 0
    fputc(0x00, f);
    fclose(f);
    CHECK_EQ(ota_core_finish(&s, 0, NULL, false, false, buf, sizeof(buf)), ESP_OK);
    CHECK_EQ(ota_core_begin(&s, 0, 0), ESP_OK);
    CHECK_EQ(ota_core_write(&s, img.data, img.len), ESP_OK);
    f = fopen(work, "r+b");
    fseek(f, part("ota_1")->address + 5, SEEK_SET);
    fputc(0x00, f);
    fclose(f);
    CHECK_EQ(ota_core_finish(&s, 0, NULL, true, true, buf, sizeof(buf)), OTA_ERR_VERIFY);
    uint8_t want[32];
    sha256(img.data, img.len, want);
    CHECK(memcmp(s.readback, want, 32) != 0);
    CHECK(strcmp(boot_label(), "ota_0") == 0);
    ota_core_free(&s);
    free(img.data);
}

// Abort at every step: nothing is left open and the boot partition never moves.
static void test_abort_at_every_step(void) {
    blob_t img = fixture("small.bin");
    size_t stops[] = {0, 100, 288, 4096, 70000, img.len};
    for (size_t i = 0; i < sizeof(stops) / sizeof(stops[0]); i++) {
        fresh_device();
        ota_core_t s;
        CHECK_EQ(ota_core_begin(&s, 0, 0), ESP_OK);
        CHECK_EQ(ota_core_write(&s, img.data, stops[i]), ESP_OK);
        ota_core_abort(&s);
        ota_core_abort(&s);
        CHECK_EQ(ota_core_finish(&s, 0, NULL, true, true, buf, sizeof(buf)), OTA_ERR_CLOSED);
        CHECK_EQ(ota_core_write(&s, img.data, 1), OTA_ERR_CLOSED);
        ota_core_free(&s);
        CHECK(strcmp(boot_label(), "ota_0") == 0);
    }
    // No ESP-IDF handle was leaked by the aborts: more sessions than handles still work.
    for (int i = 0; i < 6; i++) {
        ota_core_t s;
        CHECK_EQ(ota_core_begin(&s, 0, 0), ESP_OK);
        CHECK_EQ(ota_core_write(&s, img.data, 5000), ESP_OK);
        ota_core_abort(&s);
        ota_core_free(&s);
    }
    CHECK_EQ(update(img, img.len, 4096, true), ESP_OK);
    CHECK(strcmp(boot_label(), "ota_1") == 0);
    free(img.data);
}

static void set_running_state(esp_ota_img_states_t st) {
    // otadata[0] holds the running ota_0's entry (seq 1), written by the first boot.
    const esp_partition_t *od = part("otadata");
    uint8_t e[32];
    esp_partition_read(od, 0, e, 32);
    memcpy(e + 24, &st, 4);
    esp_partition_erase_range(od, 0, 4096);
    esp_partition_write(od, 0, e, 32);
}

static void test_pending_verify(void) {
    blob_t img = fixture("small.bin");
    fresh_device();
    set_running_state(ESP_OTA_IMG_PENDING_VERIFY);
    esp_ota_handle_t hd;
    CHECK_EQ(esp_ota_begin(part("ota_1"), 4096, &hd), ESP_ERR_OTA_ROLLBACK_INVALID_STATE);
    // Without OTA_CORE_CONFIRM the core refuses, before erasing anything.
    ota_host_reset_counts();
    ota_core_t s;
    CHECK_EQ(ota_core_begin(&s, 0, 0), ESP_OK);
    CHECK_EQ(ota_core_write(&s, img.data, img.len), ESP_ERR_OTA_ROLLBACK_INVALID_STATE);
    CHECK_EQ(ota_host_counts()->erase_4k + ota_host_counts()->erase_64k, 0);
    esp_ota_img_states_t st;
    CHECK_EQ(esp_ota_get_state_partition(part("ota_0"), &st), ESP_OK);
    CHECK_EQ(st, ESP_OTA_IMG_PENDING_VERIFY);
    ota_core_free(&s);
    // A refused image leaves it unconfirmed too.
    blob_t bad = fixture("s3.bin");
    CHECK_EQ(update(bad, 0, 4096, true), OTA_ERR_WRONG_CHIP);
    CHECK_EQ(esp_ota_get_state_partition(part("ota_0"), &st), ESP_OK);
    CHECK_EQ(st, ESP_OTA_IMG_PENDING_VERIFY);
    // With it, the running app is confirmed just before the first erase.
    CHECK_EQ(update(img, 0, 4096, true), ESP_OK);
    CHECK_EQ(esp_ota_get_state_partition(part("ota_0"), &st), ESP_OK);
    CHECK_EQ(st, ESP_OTA_IMG_VALID);
    CHECK(strcmp(boot_label(), "ota_1") == 0);
    free(img.data);
    free(bad.data);
}

// ESP-IDF 5.5's esp_ota_begin() invalidates the otadata entry of the slot it overwrites; 5.3 and
// 5.4 leave it. Either way the boot partition stays the running one until set_boot.
static void test_idf_versions(void) {
    blob_t a = fixture("small.bin"), b = fixture("new.bin");
    for (unsigned idf = 0x0504; idf <= 0x0505; idf++) {
        fresh_device();
        ota_host_set_idf(idf);
        CHECK_EQ(update(a, 0, 4096, true), ESP_OK); // ota_1, seq 2
        CHECK_EQ(esp_ota_mark_app_valid_cancel_rollback(), ESP_OK); // confirms ota_0 (running)
        // Pretend we now run from ota_1 (what the bootloader would do) and update ota_0.
        char p[600];
        snprintf(p, sizeof(p), "%s.state", work);
        FILE *f = fopen(p, "w");
        fprintf(f, "running=0x190000\nchip=esp32\nchip_rev=300\nrollback=1\nboots=2\n");
        fclose(f);
        CHECK_EQ(ota_host_open(work), ESP_OK);
        ota_host_set_idf(idf);
        CHECK_EQ(esp_ota_mark_app_valid_cancel_rollback(), ESP_OK);
        ota_core_t s;
        CHECK_EQ(ota_core_begin(&s, 0, 0), ESP_OK);
        CHECK_EQ(ota_core_write(&s, b.data, 100000), ESP_OK);
        esp_ota_img_states_t st;
        esp_err_t err = esp_ota_get_state_partition(part("ota_0"), &st);
        CHECK_EQ(err, idf == 0x0505 ? ESP_ERR_NOT_FOUND : ESP_OK);
        CHECK(strcmp(boot_label(), "ota_1") == 0);
        ota_core_abort(&s);
        ota_core_free(&s);
        CHECK(strcmp(boot_label(), "ota_1") == 0);
    }
    free(a.data);
    free(b.data);
}

static void test_esp_ota_semantics(void) {
    fresh_device();
    blob_t img = fixture("small.bin");
    esp_ota_handle_t hd;
    CHECK_EQ(esp_ota_begin(part("ota_0"), 4096, &hd), ESP_ERR_OTA_PARTITION_CONFLICT);
    CHECK_EQ(esp_ota_begin(part("nvs"), 4096, &hd), ESP_OK); // data partitions are allowed
    CHECK_EQ(esp_ota_abort(hd), ESP_OK);
    CHECK_EQ(esp_ota_abort(hd), ESP_ERR_NOT_FOUND);
    CHECK_EQ(esp_ota_begin(part("ota_1"), 4096, &hd), ESP_OK);
    CHECK_EQ(esp_ota_end(hd), ESP_ERR_INVALID_ARG); // nothing written
    CHECK_EQ(esp_ota_begin(part("ota_1"), 4096, &hd), ESP_OK);
    uint8_t zero[16] = {0};
    CHECK_EQ(esp_ota_write(hd, zero, sizeof(zero)), ESP_ERR_OTA_VALIDATE_FAILED);
    CHECK_EQ(esp_ota_abort(hd), ESP_OK);
    CHECK_EQ(esp_ota_set_boot_partition(part("ota_1")), ESP_ERR_OTA_VALIDATE_FAILED);
    esp_app_desc_t d;
    CHECK_EQ(esp_ota_get_partition_description(part("ota_0"), &d), ESP_OK);
    // built as MicroPython builds it: no version or project name (they are in the banner)
    CHECK(d.version[0] == 0 && d.project_name[0] == 0 && strcmp(d.idf_ver, "v5.5.2") == 0);
    CHECK_EQ(esp_ota_get_partition_description(part("ota_1"), &d), ESP_ERR_NOT_FOUND);
    CHECK_EQ(esp_ota_get_partition_description(part("nvs"), &d), ESP_ERR_NOT_SUPPORTED);
    CHECK(!esp_ota_check_rollback_is_possible());
    CHECK_EQ(esp_ota_mark_app_invalid_rollback_and_reboot(), ESP_ERR_OTA_ROLLBACK_FAILED);
    CHECK_EQ(update(img, 0, 4096, true), ESP_OK);
    CHECK(esp_ota_check_rollback_is_possible()); // ota_0 holds a valid image
    CHECK(ota_core_partition(OTA_CORE_NEXT) == part("ota_1"));
    CHECK(ota_core_partition(OTA_CORE_RUNNING) == part("ota_0"));
    free(img.data);
}

static jmp_buf restarted;

static void on_restart(void) {
    longjmp(restarted, 1);
}

static void test_mark_invalid_and_reboot(void) {
    fresh_device();
    blob_t img = fixture("small.bin");
    CHECK_EQ(update(img, 0, 4096, true), ESP_OK);
    ota_host_on_restart(on_restart);
    if (setjmp(restarted) == 0) {
        esp_ota_mark_app_invalid_rollback_and_reboot();
        CHECK(!"esp_restart() was not called");
    }
    ota_host_on_restart(NULL);
    esp_ota_img_states_t st;
    CHECK_EQ(esp_ota_get_state_partition(part("ota_1"), &st), ESP_OK);
    CHECK_EQ(st, ESP_OTA_IMG_INVALID);
    free(img.data);
}

// A power cut at every flash operation of an update. After each cut: the running slot is
// intact, and the boot partition is the old one, or the new one once the update completed;
// whatever it names holds a valid image.
static void power_cuts(const char *file, long stride) {
    blob_t img = fixture(file), orig = fixture("flash.bin");
    fresh_device();
    CHECK_EQ(update(img, 0, 4096, true), ESP_OK);
    const ota_host_counts_t *c = ota_host_counts();
    long total = c->erase_4k + c->erase_64k + c->program_pages;
    long tried = 0, completed = 0;
    const esp_partition_t *run = part("ota_0");
    for (long cut = 0; cut <= total; cut = cut < 8 || cut >= total - 8 ? cut + 1
        : cut + stride < total - 8 ? cut + stride : total - 8) {
        fresh_device();
        ota_host_cut_after(cut);
        esp_err_t err = update(img, 0, 4096, true);
        CHECK_EQ(err == ESP_OK, cut >= total);
        CHECK_EQ(ota_host_powered(), cut >= total);
        // Power on again: a fresh look at the flash.
        ota_host_cut_after(-1);
        CHECK_EQ(ota_host_open(work), ESP_OK);
        blob_t now = flash_now();
        CHECK(memcmp(now.data + run->address, orig.data + run->address, run->size) == 0);
        free(now.data);
        const esp_partition_t *boot = esp_ota_get_boot_partition();
        CHECK(boot == part(err == ESP_OK ? "ota_1" : "ota_0"));
        CHECK_EQ(ota_host_verify_image(boot), ESP_OK);
        tried++;
        completed += err == ESP_OK;
    }
    printf("power cuts (%s): %ld operations, %ld cut points tried, %ld completed updates, "
        "0 bricks\n", file, total, tried, completed);
    free(img.data);
    free(orig.data);
}

static void test_power_cut_at_every_operation(void) {
    power_cuts("small.bin", 1);
}

static void test_power_cut_seed_image_sampled(void) {
    power_cuts("new.bin", 97);
}

// Finish an update from `offset` on, in a new session, as after a dropped connection or a reboot.
static esp_err_t resume(blob_t img, size_t offset, size_t expected) {
    ota_core_t s;
    esp_err_t err = ota_core_begin_at(&s, expected, OTA_CORE_CONFIRM, offset, buf, sizeof(buf));
    if (err == ESP_OK) {
        err = ota_core_write(&s, img.data + offset, img.len - offset);
    }
    if (err == ESP_OK) {
        uint8_t want[32];
        sha256(img.data, img.len, want);
        err = ota_core_finish(&s, expected, want, true, true, buf, sizeof(buf));
    }
    ota_core_free(&s);
    return err;
}

static void test_resume_after_a_dropped_connection(void) {
    blob_t img = fixture("new.bin");
    size_t stops[] = {4096, 0x5000, 300000, BLOCK * 7, img.len - 100};
    for (size_t i = 0; i < sizeof(stops) / sizeof(stops[0]); i++) {
        fresh_device();
        ota_core_t s;
        CHECK_EQ(ota_core_begin(&s, 0, 0), ESP_OK);
        CHECK_EQ(ota_core_write(&s, img.data, stops[i]), ESP_OK);
        ota_core_abort(&s); // the connection dropped
        ota_core_free(&s);
        size_t at = stops[i] / 4096 * 4096;
        ota_host_reset_counts();
        CHECK_EQ(resume(img, at, img.len), ESP_OK);
        CHECK(slot_holds("ota_1", img));
        CHECK(strcmp(boot_label(), "ota_1") == 0);
        // Sectors up to the next 64 KB boundary, then blocks.
        const ota_host_counts_t *c = ota_host_counts();
        size_t to_block = (BLOCK - at % BLOCK) % BLOCK;
        CHECK_EQ(c->erase_4k, to_block / 4096 + 1); // + the otadata sector of set_boot
        CHECK_EQ(c->erase_64k, (img.len + BLOCK - 1) / BLOCK - (at + BLOCK - 1) / BLOCK);
    }
    free(img.data);
}

// After a clean stop (a dropped connection, abort()), the session says how far the slot is
// erased ahead of its data; a session resumed there with ota_core_assume_erased() erases none
// of it again: across both sessions, each sector is erased once, as in one uninterrupted update.
static void test_resume_without_erasing_twice(void) {
    blob_t img = fixture("new.bin");
    size_t stops[] = {4096, 0x5000, 300000, BLOCK * 7, BLOCK * 7 + 4096};
    for (size_t i = 0; i < sizeof(stops) / sizeof(stops[0]); i++) {
        fresh_device();
        ota_host_reset_counts();
        ota_core_t s;
        CHECK_EQ(ota_core_begin(&s, 0, 0), ESP_OK);
        CHECK_EQ(ota_core_write(&s, img.data, stops[i]), ESP_OK);
        ota_core_abort(&s);
        size_t at = s.written, erased = ota_core_erased(&s);
        CHECK_EQ(at, stops[i] / 4096 * 4096);
        CHECK_EQ(erased, (at + BLOCK - 1) / BLOCK * BLOCK);
        ota_core_free(&s);
        ota_core_t r;
        CHECK_EQ(ota_core_begin_at(&r, img.len, OTA_CORE_CONFIRM, at, buf, sizeof(buf)), ESP_OK);
        CHECK_EQ(ota_core_assume_erased(&r, erased), ESP_OK);
        CHECK_EQ(ota_core_write(&r, img.data + at, img.len - at), ESP_OK);
        uint8_t want[32];
        sha256(img.data, img.len, want);
        CHECK_EQ(ota_core_finish(&r, img.len, want, true, true, buf, sizeof(buf)), ESP_OK);
        ota_core_free(&r);
        CHECK(slot_holds("ota_1", img));
        const ota_host_counts_t *c = ota_host_counts();
        CHECK_EQ(c->erase_64k, (img.len + BLOCK - 1) / BLOCK);
        CHECK_EQ(c->erase_4k, 1); // the otadata sector of set_boot
    }
    free(img.data);
}

// A claim of erased flash is taken only for a resumed session, from its offset, in 4 KB units
// within the slot; a false one cannot install a bad image: the slot is checked whole at finish.
static void test_assume_erased_checks(void) {
    blob_t img = fixture("new.bin");
    fresh_device();
    ota_core_t s;
    CHECK_EQ(ota_core_begin(&s, 0, 0), ESP_OK);
    CHECK_EQ(ota_core_assume_erased(&s, BLOCK), ESP_ERR_INVALID_ARG); // not resumed
    CHECK_EQ(ota_core_write(&s, img.data, 3 * BLOCK), ESP_OK);
    ota_core_abort(&s);
    ota_core_free(&s);
    size_t bad[] = {BLOCK + 100, BLOCK - 4096, 0x7FFFF000};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        CHECK_EQ(ota_core_begin_at(&s, 0, 0, BLOCK, buf, sizeof(buf)), ESP_OK);
        CHECK_EQ(ota_core_assume_erased(&s, bad[i]), ESP_ERR_INVALID_ARG);
        ota_core_free(&s);
    }
    // False: the slot holds data from BLOCK to 3 * BLOCK. Programming over it cannot set bits
    // back to 1; the image fails its check and the boot partition stays.
    CHECK_EQ(ota_core_begin_at(&s, img.len, 0, BLOCK, buf, sizeof(buf)), ESP_OK);
    CHECK_EQ(ota_core_assume_erased(&s, 3 * BLOCK), ESP_OK);
    uint8_t *other = malloc(img.len);
    memcpy(other, img.data, img.len);
    for (size_t k = BLOCK; k < 3 * BLOCK; k++) {
        other[k] ^= 0x5A; // what a session resumed from another image would send
    }
    uint8_t want[32];
    sha256(other, img.len, want);
    esp_err_t err = ota_core_write(&s, other + BLOCK, img.len - BLOCK);
    if (err == ESP_OK) {
        err = ota_core_finish(&s, img.len, want, true, true, buf, sizeof(buf));
    }
    CHECK(err != ESP_OK);
    CHECK(strcmp(boot_label(), "ota_0") == 0);
    ota_core_free(&s);
    free(other);
    free(img.data);
}

// A power cut mid-update, then a new session from the last 4 KB boundary known written: the
// half-done operation at the cut is erased again and the image completes.
static void test_resume_after_a_power_cut(void) {
    blob_t img = fixture("small.bin");
    long cuts[] = {3, 40, 200, 400};
    for (size_t i = 0; i < sizeof(cuts) / sizeof(cuts[0]); i++) {
        fresh_device();
        ota_host_cut_after(cuts[i]);
        ota_core_t s;
        CHECK_EQ(ota_core_begin(&s, 0, 0), ESP_OK);
        esp_err_t err = ESP_OK;
        size_t done = 0;
        for (size_t pos = 0; err == ESP_OK && pos < img.len; pos += 4096) {
            size_t n = img.len - pos < 4096 ? img.len - pos : 4096;
            err = ota_core_write(&s, img.data + pos, n);
            if (err == ESP_OK) {
                done = pos + n;
            }
        }
        CHECK_EQ(err, ESP_ERR_FLASH_OP_FAIL);
        ota_core_free(&s);
        ota_host_cut_after(-1);
        CHECK_EQ(ota_host_open(work), ESP_OK);
        size_t at = done / 4096 * 4096;
        CHECK_EQ(resume(img, at < 4096 ? 0 : at, img.len), ESP_OK);
        CHECK(slot_holds("ota_1", img));
    }
    free(img.data);
}

static void test_resume_checks(void) {
    blob_t img = fixture("small.bin"), other = fixture("new.bin");
    fresh_device();
    ota_core_t s;
    CHECK_EQ(ota_core_begin_at(&s, 0, 0, 4097, buf, sizeof(buf)), ESP_ERR_INVALID_ARG);
    ota_core_free(&s);
    CHECK_EQ(ota_core_begin_at(&s, 8192, 0, 12288, buf, sizeof(buf)), ESP_ERR_INVALID_ARG);
    ota_core_free(&s);
    // Nothing of ours in the slot: its first bytes are no app image.
    CHECK_EQ(ota_core_begin_at(&s, 0, 0, 8192, buf, sizeof(buf)), OTA_ERR_NOT_APP_IMAGE);
    ota_core_free(&s);
    // The slot holds the start of another image: the final SHA-256 catches it.
    CHECK_EQ(update(other, 0, 4096, false), ESP_OK);
    CHECK(strcmp(boot_label(), "ota_0") == 0);
    CHECK_EQ(resume(img, 65536, 0), OTA_ERR_SHA);
    CHECK(strcmp(boot_label(), "ota_0") == 0);
    free(img.data);
    free(other.data);
}

// What a stream's readinto() says it read is checked before a byte of the read is used: any
// count but 0..asked (or no int at all) aborts the session with OTA_ERR_STREAM naming it; the
// bytes already written stay where they are and the boot partition does not change.
static void test_stream_counts(void) {
    static const struct {
        long long count;
        const char *what;
        const char *msg;
    } bad[] = {
        {4097, NULL, "Stream error: readinto() returned 4097 for a buffer of 4096 bytes."},
        {8192, NULL, "Stream error: readinto() returned 8192 for a buffer of 4096 bytes."},
        {-1, NULL, "Stream error: readinto() returned -1 for a buffer of 4096 bytes."},
        {1LL << 40, NULL, "Stream error: readinto() returned a huge int for a buffer of 4096 "
            "bytes."},
        {0, "float", "Stream error: readinto() returned a float for a buffer of 4096 bytes."},
    };
    blob_t img = fixture("small.bin");
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        fresh_device();
        ota_core_t s;
        CHECK_EQ(ota_core_begin(&s, 0, 0), ESP_OK);
        CHECK_EQ(ota_core_check_read(&s, 0, 4096, NULL), ESP_OK);
        CHECK_EQ(ota_core_check_read(&s, 4096, 4096, NULL), ESP_OK);
        CHECK_EQ(ota_core_write(&s, img.data, 8192), ESP_OK);
        ota_host_counts_t before = *ota_host_counts();
        CHECK_EQ(ota_core_check_read(&s, bad[i].count, 4096, bad[i].what), OTA_ERR_STREAM);
        CHECK_EQ(s.state, OTA_CORE_ABORTED);
        CHECK(!s.handle_open);
        CHECK_EQ(s.received, 8192);
        char msg[320];
        ota_core_message(&s, OTA_ERR_STREAM, 0, NULL, msg, sizeof(msg));
        if (strcmp(msg, bad[i].msg) != 0) {
            printf("message: %s\n", msg);
        }
        CHECK(strcmp(msg, bad[i].msg) == 0);
        CHECK_EQ(ota_core_write(&s, img.data + 8192, 4096), OTA_ERR_CLOSED);
        CHECK_EQ(ota_host_counts()->program_pages, before.program_pages);
        CHECK(strcmp(boot_label(), "ota_0") == 0);
        ota_core_free(&s);
    }
    free(img.data);
}

// Page programs for the seed image whatever the size of the pieces it arrives in (a socket's
// 536 or 1,460 bytes, a file's 4 KB): every page is programmed once, the 288-byte head with the
// rest of its first 4 KB.
static void test_page_programs_any_read_size(void) {
    static const size_t sizes[] = {1, 100, 536, 1460, 4096, 4097, 65536};
    blob_t img = fixture("new.bin");
    size_t over = 0;
    for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
        fresh_device();
        CHECK_EQ(update(img, img.len, sizes[i], false), ESP_OK);
        const ota_host_counts_t *c = ota_host_counts();
        printf("%zu-byte writes: %u pages programmed (floor %zu), %u x 64 KB + %u x 4 KB "
            "erased\n", sizes[i], c->program_pages, (img.len + 255) / 256, c->erase_64k,
            c->erase_4k);
        over += c->program_pages - (img.len + 255) / 256;
        CHECK_EQ(c->program_bytes, img.len);
        CHECK(slot_holds("ota_1", img));
    }
    free(img.data);
    CHECK_EQ(over, 0);
}

// An update with its length known, interrupted (the connection drops) and resumed from the bytes
// on flash: sectors erased over both sessions, against the 384 of the image's 24 blocks. Only
// the rest of the block the first session was writing in is erased again (the resume cannot
// know that no byte went there), never the blocks beyond it.
static void test_erases_across_an_interrupted_update(void) {
    blob_t img = fixture("new.bin");
    size_t stops[] = {BLOCK * 12, BLOCK * 12 + 5000, img.len / 2, img.len - 100};
    int bad = 0;
    for (size_t i = 0; i < sizeof(stops) / sizeof(stops[0]); i++) {
        fresh_device();
        ota_core_t s;
        CHECK_EQ(ota_core_begin(&s, img.len, 0), ESP_OK);
        for (size_t pos = 0; pos < stops[i]; pos += 1460) {
            size_t n = stops[i] - pos < 1460 ? stops[i] - pos : 1460;
            CHECK_EQ(ota_core_write(&s, img.data + pos, n), ESP_OK);
        }
        size_t at = s.written; // what Update.flashed reports: where the update resumes
        ota_core_abort(&s);
        ota_core_free(&s);
        CHECK_EQ(resume(img, at, img.len), ESP_OK);
        CHECK(slot_holds("ota_1", img));
        const ota_host_counts_t *c = ota_host_counts();
        long sectors = c->erase_64k * 16L + c->erase_4k - 1; // - the otadata sector
        long again = sectors - (long)((img.len + BLOCK - 1) / BLOCK * 16);
        printf("stopped at %zu, resumed at %zu: %u x 64 KB + %u x 4 KB erased, %ld sectors "
            "erased twice\n", stops[i], at, c->erase_64k, c->erase_4k, again);
        bad += again > (long)((BLOCK - at % BLOCK) % BLOCK / 4096);
    }
    free(img.data);
    CHECK_EQ(bad, 0);
}

// Bytes read by an update of img through the core, by step: writing, finish(verify), set_boot.
static bool reads_of(blob_t img, bool verify, bool debugger, uint32_t r[3]) {
    fresh_device();
    ota_host_set_debugger(debugger);
    ota_core_t s;
    bool ok = ota_core_begin(&s, img.len, OTA_CORE_CONFIRM) == ESP_OK
        && ota_core_write(&s, img.data, img.len) == ESP_OK;
    r[0] = ota_host_counts()->read_bytes;
    ok = ok && ota_core_finish(&s, img.len, NULL, verify, false, buf, sizeof(buf)) == ESP_OK;
    r[1] = ota_host_counts()->read_bytes - r[0];
    ok = ok && ota_core_set_boot(part("ota_1")) == ESP_OK;
    r[2] = ota_host_counts()->read_bytes - r[0] - r[1];
    ota_core_free(&s);
    return ok && slot_holds("ota_1", img);
}

// Flash reads of an update of the seed image (1,525,536 bytes, with the SHA-256 appended as in
// every MicroPython build), by step: esp_ota_end() and esp_ota_set_boot_partition() each run
// esp_image_verify(), which reads the whole image; finish(verify=true) adds only what it reads
// to tie that check to the bytes received: the image's header, segment headers and appended
// digest (esp_image_get_metadata()). Two image reads in all, ESP-IDF's own. Without an
// appended digest, or with a debugger attached (ESP-IDF then compares no digest), verify reads
// the image back: three.
static void test_read_counts(void) {
    blob_t img = fixture("new.bin"), nodigest = fixture("nodigest.bin");
    CHECK_EQ(img.len, 1525536);
    CHECK_EQ(img.data[23], 1); // hash_appended
    CHECK_EQ(nodigest.data[23], 0);
    uint32_t plain[3], verified[3], debugger[3], nd_plain[3], nd_verified[3];
    CHECK(reads_of(img, false, false, plain));
    CHECK(reads_of(img, true, false, verified));
    CHECK(reads_of(img, true, true, debugger));
    CHECK(reads_of(nodigest, false, false, nd_plain));
    CHECK(reads_of(nodigest, true, false, nd_verified));
    uint32_t total = verified[0] + verified[1] + verified[2];
    printf("seed image (%zu bytes), bytes read: writing %u, finish(verify=false) %u, "
        "finish(verify=true) %u, set_boot %u; update with verify %u = %.3f x the image; "
        "finish(verify=true) with a debugger attached %u\n", img.len, verified[0], plain[1],
        verified[1], verified[2], total, (double)total / img.len, debugger[1]);
    CHECK_EQ(plain[1], img.len); // esp_ota_end()'s esp_image_verify()
    CHECK_EQ(verified[2], img.len + 2 * 32); // esp_ota_set_boot_partition()'s, + otadata
    // header, a header per segment, the appended digest
    CHECK_EQ(verified[1] - plain[1], 24 + 8 * img.data[1] + 32);
    CHECK_EQ(total / img.len, 2);
    CHECK_EQ(debugger[1] - plain[1], img.len);
    CHECK_EQ(nd_verified[1] - nd_plain[1], nodigest.len);
    free(img.data);
    free(nodigest.data);
}

static void hex(char *out, const uint8_t *d) {
    for (int i = 0; i < 32; i++) {
        sprintf(out + 2 * i, "%02x", d[i]);
    }
}

// The flash does not hold what was written: a weak cell flips a bit once it is programmed, in
// the header, the data, the last piece (programmed by finish() itself), the checksum's padding
// or the appended digest. With verify, finish() says so as the pure backend does (OTA_ERR_VERIFY:
// "SHA verify failed: write=... read=..." with the SHA-256 of the bytes on flash), with or
// without a debugger attached; without verify, esp_ota_end() refuses the image. The boot
// partition never moves.
static void test_corrupted_flash_is_caught(void) {
    blob_t img = fixture("new.bin");
    uint8_t want[32], bad[32];
    sha256(img.data, img.len, want);
    size_t offsets[] = {5, 0x1005, 0x80000, img.len - 40, img.len - 33, img.len - 1};
    for (size_t i = 0; i < sizeof(offsets) / sizeof(offsets[0]); i++) {
        img.data[offsets[i]] ^= 0x10;
        sha256(img.data, img.len, bad);
        img.data[offsets[i]] ^= 0x10;
        for (int mode = 0; mode < 3; mode++) { // verify; verify with a debugger; no verify
            fresh_device();
            ota_host_set_debugger(mode == 1);
            ota_host_flip_after_program(part("ota_1")->address + offsets[i], 0x10);
            ota_core_t s;
            CHECK_EQ(ota_core_begin(&s, img.len, 0), ESP_OK);
            CHECK_EQ(ota_core_write(&s, img.data, img.len), ESP_OK);
            esp_err_t err = ota_core_finish(&s, img.len, want, mode < 2, true, buf, sizeof(buf));
            CHECK(strcmp(boot_label(), "ota_0") == 0);
            if (mode == 2) {
                CHECK_EQ(err, ESP_ERR_OTA_VALIDATE_FAILED);
                ota_core_free(&s);
                continue;
            }
            CHECK_EQ(err, OTA_ERR_VERIFY);
            CHECK(s.read_back);
            CHECK(memcmp(s.readback, bad, 32) == 0);
            char msg[320], expect[200], w[65], r[65];
            hex(w, want);
            hex(r, bad);
            snprintf(expect, sizeof(expect), "SHA verify failed: write=%s read=%s", w, r);
            ota_core_message(&s, err, img.len, want, msg, sizeof(msg));
            CHECK(strcmp(msg, expect) == 0);
            ota_core_free(&s);
        }
    }
    free(img.data);
}

static const test_t tests[] = {
#define T(x) {#x, x}
    T(test_update_seed_image_known_length),
    T(test_chunk_sizes),
    T(test_erase_counts),
    T(test_esp_ota_erase_strategies),
    T(test_image_checks_before_any_erase),
    T(test_too_large),
    T(test_length_and_sha_mismatch),
    T(test_truncated_image_fails_esp_ota_end),
    T(test_readback_verification),
    T(test_read_counts),
    T(test_corrupted_flash_is_caught),
    T(test_abort_at_every_step),
    T(test_pending_verify),
    T(test_idf_versions),
    T(test_esp_ota_semantics),
    T(test_mark_invalid_and_reboot),
    T(test_power_cut_at_every_operation),
    T(test_resume_after_a_dropped_connection),
    T(test_resume_without_erasing_twice),
    T(test_assume_erased_checks),
    T(test_resume_after_a_power_cut),
    T(test_resume_checks),
    T(test_stream_counts),
    T(test_page_programs_any_read_size),
    T(test_erases_across_an_interrupted_update),
    T(test_power_cut_seed_image_sampled),
#undef T
};

int main(int argc, char **argv) {
    size_t n = sizeof(tests) / sizeof(tests[0]);
    if (argc > 1 && strcmp(argv[1], "--list") == 0) {
        for (size_t i = 0; i < n; i++) {
            printf("%s\n", tests[i].name);
        }
        return 0;
    }
    if (argc < 2) {
        fprintf(stderr, "usage: %s FIXTURES [TEST...] | --list\n", argv[0]);
        return 2;
    }
    fixtures = argv[1];
    return run_tests(tests, n, argc, argv);
}

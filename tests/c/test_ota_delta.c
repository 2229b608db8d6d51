// C tests of the core's delta-patch applier (usermod/ota_native/ota_delta.c) over the host
// backend: the old image is read from the simulated flash through esp_partition_read().
//
//   test_ota_delta FIXTURES [TEST...]     run all tests, or the named ones
//   test_ota_delta --list                 list the tests
//   test_ota_delta --apply FIXTURES KIND  apply KIND.patch once, in 4 KB pieces (for callgrind)
//
// FIXTURES is a directory prepared by tests/test_native_delta.py: flash.bin (+ .state), a
// simulated ESP32 running old.bin from ota_0, and for each pair (host/mpota/pairs.py) KIND.new,
// KIND.patch (the detools patch, as host/mpota/delta.py makes it) and KIND.cps (its checkpoints
// every 4 KB of output: "out pay frm phase left" lines, from host/mpota/delta.py). The list of
// kinds is in the file "kinds".

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ota_core.h"
#include "ota_delta.h"
#include "ota_host.h"

#include "check.h"

static const char *fixtures;
static blob_t fixture(const char *name, const char *ext) {
    char p[600];
    snprintf(p, sizeof(p), "%s/%s%s", fixtures, name, ext);
    return load(p);
}

static const esp_partition_t *old_part(void) {
    return esp_partition_find_first(ESP_PARTITION_TYPE_APP, ESP_PARTITION_SUBTYPE_ANY, "ota_0");
}

static size_t old_len(void) {
    blob_t b = fixture("old", ".bin");
    free(b.data);
    return b.len;
}

static void open_device(void) {
    char p[600];
    snprintf(p, sizeof(p), "%s/flash.bin", fixtures);
    if (ota_host_open(p) != ESP_OK) {
        fprintf(stderr, "cannot open %s\n", p);
        exit(2);
    }
    ota_host_reset_counts();
}

// The kinds of pairs in the fixtures, one per line of "kinds".
static int kinds(char names[][32], int max) {
    blob_t b = fixture("kinds", "");
    int n = 0;
    char *s = (char *)b.data;
    size_t i = 0;
    while (i < b.len && n < max) {
        size_t j = i;
        while (j < b.len && s[j] != '\n') {
            j++;
        }
        if (j > i && j - i < 32) {
            memcpy(names[n], s + i, j - i);
            names[n++][j - i] = 0;
        }
        i = j + 1;
    }
    free(b.data);
    return n;
}

typedef struct {
    size_t out, pay, frm;
    int phase;
    size_t left;
} cp_t;

static int checkpoints(const char *kind, cp_t *cps, int max) {
    char p[600];
    snprintf(p, sizeof(p), "%s/%s.cps", fixtures, kind);
    FILE *f = fopen(p, "r");
    int n = 0;
    while (f && n < max && fscanf(f, "%zu %zu %zu %d %zu", &cps[n].out, &cps[n].pay,
        &cps[n].frm, &cps[n].phase, &cps[n].left) == 5) {
        n++;
    }
    if (f) {
        fclose(f);
    }
    return n;
}

// Apply patch[0:len) in input pieces of `in_step` bytes and output pieces of `out_step`;
// returns the first error, ESP_OK when the image is complete and the patch ended there. *made:
// image bytes written at out (out_cap of room).
static esp_err_t apply(ota_delta_t *d, const uint8_t *patch, size_t len, size_t in_step,
    size_t out_step, uint8_t *out, size_t out_cap, size_t *made) {
    size_t i = 0;
    *made = 0;
    while (i < len) {
        size_t n = len - i < in_step ? len - i : in_step;
        size_t pos = 0;
        while (pos < n) {
            size_t used, m, room = out_cap - *made;
            if (room > out_step) {
                room = out_step;
            }
            esp_err_t err = ota_delta_run(d, patch + i + pos, n - pos, &used, out + *made, room,
                &m);
            pos += used;
            *made += m;
            if (err != ESP_OK) {
                return err;
            }
            if (used == 0 && m == 0) {
                return ESP_FAIL; // no progress: the output is full
            }
        }
        i += n;
    }
    return ota_delta_end(d);
}

static void message_is(esp_err_t err, const char *want, bool *ok) {
    char msg[320];
    ota_core_message(NULL, err, 0, NULL, msg, sizeof(msg));
    if (strcmp(msg, want) != 0) {
        printf("message of 0x%x: '%s', not '%s'\n", (unsigned)err, msg, want);
        *ok = false;
    }
}

// ---- the tests

// Real patches (detools, from host/mpota/delta.py): the output is the new image, whatever the
// sizes the patch arrives in and the image leaves in, down to one byte at a time.
static void test_real_patches_any_piece_sizes(void) {
    open_device();
    char names[8][32];
    int nk = kinds(names, 8);
    CHECK(nk >= 3);
    size_t olen = old_len();
    static const size_t steps[][2] = {{1, 1}, {1, 4096}, {4096, 1}, {7, 13}, {4096, 4096},
        {65536, 3000}, {1 << 30, 1 << 30}};
    for (int k = 0; k < nk; k++) {
        blob_t patch = fixture(names[k], ".patch"), img = fixture(names[k], ".new");
        uint8_t *out = malloc(img.len + 16);
        for (size_t s = 0; s < sizeof(steps) / sizeof(steps[0]); s++) {
            ota_delta_t d;
            CHECK_EQ(ota_delta_begin(&d, old_part(), olen, img.len), ESP_OK);
            size_t made;
            memset(out, 0xAA, img.len + 16);
            CHECK_EQ(apply(&d, patch.data, patch.len, steps[s][0], steps[s][1], out,
                img.len + 16, &made), ESP_OK);
            CHECK_EQ(made, img.len);
            CHECK(memcmp(out, img.data, img.len) == 0);
            CHECK(ota_delta_done(&d));
            CHECK_EQ(d.out, img.len);
        }
        free(out);
        free(patch.data);
        free(img.data);
    }
}

// From every checkpoint the rest of the patch gives the same bytes as a full run.
static void test_resume_at_every_checkpoint(void) {
    open_device();
    char names[8][32];
    int nk = kinds(names, 8);
    size_t olen = old_len();
    static cp_t cps[4096];
    for (int k = 0; k < nk; k++) {
        blob_t patch = fixture(names[k], ".patch"), img = fixture(names[k], ".new");
        int n = checkpoints(names[k], cps, 4096);
        CHECK(n > 10);
        uint8_t *out = malloc(img.len);
        int phases[3] = {0, 0, 0};
        for (int c = 0; c < n; c++) {
            ota_delta_t d;
            CHECK_EQ(ota_delta_begin_at(&d, old_part(), olen, img.len, cps[c].out, cps[c].frm,
                cps[c].phase, cps[c].left), ESP_OK);
            size_t made;
            CHECK_EQ(apply(&d, patch.data + cps[c].pay, patch.len - cps[c].pay,
                c % 2 ? 1 : 4096, c % 3 ? 4096 : 5, out, img.len, &made), ESP_OK);
            CHECK_EQ(made, img.len - cps[c].out);
            CHECK(memcmp(out, img.data + cps[c].out, made) == 0);
            phases[cps[c].phase]++;
        }
        CHECK(phases[OTA_DELTA_DIFF] > 0);
        free(out);
        free(patch.data);
        free(img.data);
    }
}

// Hand-made patches, one for each error of the patch, in python/ota/delta.py's words; then
// the applier keeps returning its error.
static void test_errors(void) {
    open_device();
    size_t olen = old_len();
    // length 100 = 0x64: 0x80 | (100 & 0x3f) = 0xa4, then 100 >> 6 = 1
    static const struct {
        const char *what;
        uint8_t patch[24];
        size_t len;
        size_t length;
        esp_err_t err;
        size_t made;
    } cases[] = {
        {"compressed or not sequential", {0x10}, 1, 100, OTA_ERR_DELTA_KIND, 0},
        {"another length", {0x00, 0x23, 0x00}, 3, 100, OTA_ERR_DELTA_LENGTH, 0},
        {"negative length", {0x00, 0xe4, 0x01}, 3, 100, OTA_ERR_DELTA_LENGTH, 0},
        {"data format", {0x00, 0xa4, 0x01, 0x05}, 4, 100, OTA_ERR_DELTA_DATA_FORMAT, 0},
        {"size of 48 bits", {0x00, 0xa4, 0x01, 0x00, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01},
         11, 100, OTA_ERR_DELTA_SIZE, 0},
        {"size of 41 bits: read, then too long", {0x00, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f},
         7, 100, OTA_ERR_DELTA_LENGTH, 0},
        {"diff past the new image", {0x00, 0xa4, 0x01, 0x00, 0xa5, 0x01}, 6, 100,
         OTA_ERR_DELTA_PAST_END, 0},
        {"negative diff size", {0x00, 0xa4, 0x01, 0x00, 0x41}, 5, 100, OTA_ERR_DELTA_PAST_END,
         0},
        {"extra past the new image", {0x00, 0xa4, 0x01, 0x00, 0x0a, 0, 0, 0, 0, 0, 0, 0, 0, 0,
                                      0, 0x9b, 0x01}, 17, 100, OTA_ERR_DELTA_PAST_END, 10},
        {"negative old position", {0x00, 0xa4, 0x01, 0x00, 0x00, 0x01, 0x07, 0x41, 0x01}, 9,
         100, OTA_ERR_DELTA_OUTSIDE, 1},
        {"trailing data", {0x00, 0x02, 0x00, 0x02, 0x01, 0x02, 0x00, 0x00, 0x00}, 9, 2,
         OTA_ERR_DELTA_TRAILING, 2},
        {"truncated in a size", {0x00, 0xa4}, 2, 100, OTA_ERR_DELTA_TRUNCATED, 0},
        {"truncated in a block", {0x00, 0xa4, 0x01, 0x00, 0x0a, 1, 2, 3}, 8, 100,
         OTA_ERR_DELTA_TRUNCATED, 3},
        {"truncated before the adjustment", {0x00, 0x02, 0x00, 0x02, 0x01, 0x02, 0x00}, 7, 2,
         OTA_ERR_DELTA_TRUNCATED, 2},
        {"empty", {0}, 0, 100, OTA_ERR_DELTA_TRUNCATED, 0},
    };
    uint8_t out[256];
    for (size_t c = 0; c < sizeof(cases) / sizeof(cases[0]); c++) {
        for (size_t step = 1; step <= 64; step *= 64) {
            ota_delta_t d;
            CHECK_EQ(ota_delta_begin(&d, old_part(), olen, cases[c].length), ESP_OK);
            size_t made;
            esp_err_t err = apply(&d, cases[c].patch, cases[c].len, step, step, out,
                sizeof(out), &made);
            if (err != cases[c].err) {
                printf("%s (pieces of %zu): 0x%x\n", cases[c].what, step, (unsigned)err);
            }
            CHECK_EQ(err, cases[c].err);
            CHECK_EQ(made, cases[c].made);
            size_t used;
            CHECK_EQ(ota_delta_run(&d, (const uint8_t *)"\0", 1, &used, out, 1, &made),
                cases[c].err);
            CHECK_EQ(used + made, 0);
            CHECK_EQ(ota_delta_end(&d), cases[c].err);
        }
    }
    // A 12-byte old image, a 20-byte new one: a diff block of 10, an extra block of 0, then
    // (q) the adjustment and the next diff block's size.
    ota_delta_t d;
    uint8_t p[15] = {0x00, 20, 0x00, 0x0a, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x00};
    uint8_t q[2] = {0x00, 0x04};
    size_t made, used;
    CHECK_EQ(ota_delta_begin(&d, old_part(), 12, 20), ESP_OK);
    CHECK_EQ(ota_delta_run(&d, p, sizeof(p), &used, out, sizeof(out), &made), ESP_OK);
    CHECK_EQ(used, sizeof(p));
    CHECK_EQ(made, 10);
    // adjustment 0: frm = 10, and a diff block of 4 would read [10, 14)
    CHECK_EQ(ota_delta_run(&d, q, 2, &used, out, sizeof(out), &made), OTA_ERR_DELTA_OUTSIDE);
    CHECK_EQ(ota_delta_begin(&d, old_part(), 12, 20), ESP_OK);
    CHECK_EQ(ota_delta_run(&d, p, sizeof(p), &used, out, sizeof(out), &made), ESP_OK);
    q[0] = 0x40 | 0x02; // adjustment -2: frm = 8, and [8, 12) is within
    CHECK_EQ(ota_delta_run(&d, q, 2, &used, out, sizeof(out), &made), ESP_OK);
    CHECK_EQ(used, 2);
    CHECK_EQ(made, 0); // the diff block's bytes have not come yet
    CHECK_EQ(d.frm, 8);
    CHECK_EQ(ota_delta_end(&d), OTA_ERR_DELTA_TRUNCATED);
    bool ok = true;
    message_is(OTA_ERR_DELTA_TRUNCATED, "The patch is truncated.", &ok);
    message_is(OTA_ERR_DELTA_SIZE, "The patch holds a size that is too large: corrupted.", &ok);
    message_is(OTA_ERR_DELTA_PAST_END,
        "The patch's blocks run past the new image: corrupted patch.", &ok);
    message_is(OTA_ERR_DELTA_OUTSIDE, "The patch reads outside the old image: corrupted patch.",
        &ok);
    message_is(OTA_ERR_DELTA_KIND,
        "The patch is not a detools sequential patch without compression.", &ok);
    message_is(OTA_ERR_DELTA_LENGTH, "The patch makes an image of another length.", &ok);
    message_is(OTA_ERR_DELTA_DATA_FORMAT, "detools data-format patches are not supported.",
        &ok);
    message_is(OTA_ERR_DELTA_TRAILING, "The patch goes on past its end: corrupted.", &ok);
    message_is(OTA_ERR_DELTA_CHECKPOINT,
        "The transfer's checkpoint is not in a diff or extra block.", &ok);
    CHECK(ok);
}

// Checkpoints outside a diff or extra block, or whose block does not fit; an old image longer
// than its partition; a failed esp_partition_read().
static void test_begin_checks_and_read_errors(void) {
    open_device();
    const esp_partition_t *old = old_part();
    size_t olen = old_len();
    ota_delta_t d;
    CHECK_EQ(ota_delta_begin_at(&d, old, olen, 100, 0, 0, 0, 0), OTA_ERR_DELTA_CHECKPOINT);
    CHECK_EQ(ota_delta_begin_at(&d, old, olen, 100, 0, 0, 3, 0), OTA_ERR_DELTA_CHECKPOINT);
    CHECK_EQ(ota_delta_begin_at(&d, old, olen, 100, 50, 0, OTA_DELTA_EXTRA, 51),
        OTA_ERR_DELTA_PAST_END);
    CHECK_EQ(ota_delta_begin_at(&d, old, olen, 100, 101, 0, OTA_DELTA_EXTRA, 0),
        OTA_ERR_DELTA_PAST_END);
    CHECK_EQ(ota_delta_begin_at(&d, old, olen, 100, 50, olen - 10, OTA_DELTA_DIFF, 11),
        OTA_ERR_DELTA_OUTSIDE);
    CHECK_EQ(ota_delta_begin_at(&d, old, olen, 100, 50, olen - 10, OTA_DELTA_DIFF, 10), ESP_OK);
    CHECK_EQ(ota_delta_begin(&d, old, old->size + 1, 100), ESP_ERR_INVALID_ARG);
    CHECK_EQ(ota_delta_begin(&d, NULL, 0, 100), ESP_ERR_INVALID_ARG);
    size_t used, made;
    uint8_t out[8];
    CHECK_EQ(ota_delta_run(&d, (const uint8_t *)"\0", 1, &used, out, 1, &made),
        ESP_ERR_INVALID_ARG);
    // esp_partition_read() fails (a partition past the end of the flash): its error
    esp_partition_t far = *old;
    far.address = 0x7FF00000;
    uint8_t p[6] = {0x00, 0x04, 0x00, 0x04, 1, 2};
    CHECK_EQ(ota_delta_begin(&d, &far, 16, 4), ESP_OK);
    CHECK_EQ(ota_delta_run(&d, p, 6, &used, out, sizeof(out), &made), ESP_ERR_INVALID_ARG);
    CHECK_EQ(made, 0);
}

// Every field of a checkpoint is bounded by ota_delta_begin_at() itself, whatever its caller
// checked. frm near INT64_MAX used to pass: frm + left wrapped negative and passed the "outside
// the old image" check (only esp_partition_read()'s range check stopped the read), and an
// adjustment after an extra block added to it unchecked (undefined behaviour).
static void test_checkpoint_fields_bounded(void) {
    open_device();
    const esp_partition_t *old = old_part();
    size_t olen = old_len(), used, made;
    ota_delta_t d;
    uint8_t out[64];
    CHECK_EQ(ota_delta_begin_at(&d, old, olen, 100, 0, INT64_MAX - 5, OTA_DELTA_DIFF, 10),
        OTA_ERR_DELTA_OUTSIDE);
    CHECK_EQ(ota_delta_begin_at(&d, old, olen, 100, 0, INT64_MAX, OTA_DELTA_EXTRA, 0),
        OTA_ERR_DELTA_OUTSIDE);
    CHECK_EQ(ota_delta_begin_at(&d, old, olen, 100, 0, INT64_MIN, OTA_DELTA_EXTRA, 0),
        OTA_ERR_DELTA_OUTSIDE);
    CHECK_EQ(ota_delta_begin_at(&d, old, olen, 100, 0, -1, OTA_DELTA_EXTRA, 0),
        OTA_ERR_DELTA_OUTSIDE);
    CHECK_EQ(ota_delta_begin_at(&d, old, olen, 100, 0, (int64_t)olen + 1, OTA_DELTA_EXTRA, 0),
        OTA_ERR_DELTA_OUTSIDE);
    CHECK_EQ(ota_delta_begin_at(&d, old, olen, 100, 0, 0, OTA_DELTA_EXTRA, UINT64_MAX),
        OTA_ERR_DELTA_PAST_END);
    CHECK_EQ(ota_delta_begin_at(&d, old, olen, SIZE_MAX, 0, 0, OTA_DELTA_EXTRA, UINT64_MAX),
        OTA_ERR_DELTA_PAST_END);
    CHECK_EQ(ota_delta_begin_at(&d, old, olen, 100, SIZE_MAX, 0, OTA_DELTA_EXTRA, 0),
        OTA_ERR_DELTA_PAST_END);
    CHECK_EQ(ota_delta_begin_at(&d, old, olen, olen + 100, 0, 1, OTA_DELTA_DIFF, olen),
        OTA_ERR_DELTA_OUTSIDE);
    // A refused checkpoint leaves an applier that reads nothing and makes nothing.
    ota_host_reset_counts();
    CHECK_EQ(ota_delta_begin_at(&d, old, olen, 100, 0, INT64_MAX - 5, OTA_DELTA_DIFF, 10),
        OTA_ERR_DELTA_OUTSIDE);
    CHECK_EQ(ota_delta_run(&d, (const uint8_t *)"0123456789", 10, &used, out, sizeof(out),
        &made), OTA_ERR_DELTA_OUTSIDE);
    CHECK_EQ(made, 0);
    CHECK_EQ(ota_host_counts()->read_ops, 0);
    // The edges that are valid: at the old image's end in an extra block (its 3 bytes, then
    // an adjustment of -olen back to its start, then a diff block of 2 bytes there).
    CHECK_EQ(ota_delta_begin_at(&d, old, olen, 5, 0, (int64_t)olen, OTA_DELTA_EXTRA, 3), ESP_OK);
    uint8_t enc[16] = {'a', 'b', 'c'};
    size_t n = 3;
    uint64_t a = olen;
    enc[n++] = 0x40 | (a & 0x3F) | (a >> 6 ? 0x80 : 0); // -olen
    for (a >>= 6; a; a >>= 7) {
        enc[n++] = (a & 0x7F) | (a >> 7 ? 0x80 : 0);
    }
    enc[n++] = 2; // a diff block of 2 bytes
    uint8_t first[2];
    CHECK_EQ(esp_partition_read(old, 0, first, 2), ESP_OK);
    // the two diff bytes (added to the old ones), an empty extra block, adjustment 0
    memset(enc + n, 0, 4);
    n += 4;
    CHECK_EQ(apply(&d, enc, n, 1, 1, out, 5, &made), ESP_OK);
    CHECK_EQ(made, 5);
    CHECK(memcmp(out, "abc", 3) == 0 && out[3] == first[0] && out[4] == first[1]);
}

// Each window of the old image is read once while a diff block walks through it: reads of the
// old image for a patch of one version-string change (every diff block forward).
static void test_old_image_read_once_per_window(void) {
    open_device();
    char names[8][32];
    int nk = kinds(names, 8);
    size_t olen = old_len();
    for (int k = 0; k < nk; k++) {
        blob_t patch = fixture(names[k], ".patch"), img = fixture(names[k], ".new");
        uint8_t *out = malloc(img.len);
        ota_delta_t d;
        ota_host_reset_counts();
        CHECK_EQ(ota_delta_begin(&d, old_part(), olen, img.len), ESP_OK);
        size_t made;
        CHECK_EQ(apply(&d, patch.data, patch.len, 4096, 4096, out, img.len, &made), ESP_OK);
        const ota_host_counts_t *c = ota_host_counts();
        size_t windows = (olen + OTA_DELTA_OLD_BUF - 1) / OTA_DELTA_OLD_BUF;
        printf("%s: %u reads of %u bytes (%zu windows in the old image)\n", names[k],
            (unsigned)c->read_ops, (unsigned)OTA_DELTA_OLD_BUF, windows);
        CHECK(c->read_ops >= windows / 2);
        if (strcmp(names[k], "version") == 0) {
            CHECK(c->read_ops <= windows + 2);
        }
        CHECK_EQ(c->read_bytes, (size_t)c->read_ops * OTA_DELTA_OLD_BUF);
        free(out);
        free(patch.data);
        free(img.data);
    }
}

static const test_t tests[] = {
#define T(x) {#x, x}
    T(test_real_patches_any_piece_sizes),
    T(test_resume_at_every_checkpoint),
    T(test_errors),
    T(test_begin_checks_and_read_errors),
    T(test_checkpoint_fields_bounded),
    T(test_old_image_read_once_per_window),
#undef T
};

// One application of KIND.patch, in 4 KB pieces, for an instruction count (bench/delta.py).
static int apply_once(const char *kind) {
    open_device();
    blob_t patch = fixture(kind, ".patch"), img = fixture(kind, ".new");
    static uint8_t out[4096];
    ota_delta_t d;
    esp_err_t err = ota_delta_begin(&d, old_part(), old_len(), img.len);
    size_t i = 0, made = 0;
    while (err == ESP_OK && !ota_delta_done(&d)) {
        size_t used, m, n = patch.len - i < 4096 ? patch.len - i : 4096;
        if (n == 0) {
            err = ota_delta_end(&d);
            break;
        }
        err = ota_delta_run(&d, patch.data + i, n, &used, out, sizeof(out), &m);
        i += used;
        made += m;
    }
    printf("%s: %zu bytes made, error 0x%x, %u reads of the old image, buffer %u bytes\n",
        kind, made, (unsigned)err, (unsigned)ota_host_counts()->read_ops,
        (unsigned)OTA_DELTA_OLD_BUF);
    return err != ESP_OK || made != img.len;
}

int main(int argc, char **argv) {
    size_t n = sizeof(tests) / sizeof(tests[0]);
    if (argc > 1 && strcmp(argv[1], "--list") == 0) {
        for (size_t i = 0; i < n; i++) {
            printf("%s\n", tests[i].name);
        }
        return 0;
    }
    if (argc == 4 && strcmp(argv[1], "--apply") == 0) {
        fixtures = argv[2];
        return apply_once(argv[3]);
    }
    if (argc < 2) {
        fprintf(stderr, "usage: %s FIXTURES [TEST...] | --list | --apply FIXTURES KIND\n",
            argv[0]);
        return 2;
    }
    fixtures = argv[1];
    return run_tests(tests, n, argc, argv);
}

// Fuzz target: the core's delta-patch applier (usermod/ota_native/ota_delta.c), which applies
// patch bytes from the network before anything has checked them. Input: a 32-byte header, then
// the patch bytes.
//   0  flags: bit 0 start at the checkpoint below (ota_delta_begin_at), else at the start
//   1  seed of the input piece sizes, 2 seed of the output room sizes
//   3  u32 new image length, 7 u32 old image length (the old image is the device's ota_0)
//   11 checkpoint: u32 out, 15 i64 frm, 23 u8 phase, 24 u64 left (all unchecked)
// The patch goes in, in pieces of random sizes (exact-size heap copies), out into rooms of random
// sizes (exact-size heap buffers). Invariants: no call uses more than it is given or makes more
// than it has room for, no call stalls, an error sticks, the image never grows past its length
// and is complete when the applier says so.
#include "ota_delta.h"

#include "fuzz_common.h"

#define HEADER (32)

#ifdef FUZZ_M32
const esp_partition_t *fuzz_m32_old(void); // m32_partition.c
#endif

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc;
    (void)argv;
    #ifdef FUZZ_M32
    fuzz_m32_old();
    #else
    fuzz_device_open();
    #endif
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < HEADER) {
        return 0;
    }
    static const esp_partition_t *old;
    if (old == NULL) {
        #ifdef FUZZ_M32
        old = fuzz_m32_old();
        #else
        old = esp_partition_find_first(ESP_PARTITION_TYPE_APP, ESP_PARTITION_SUBTYPE_ANY,
            "ota_0");
        #endif
        FUZZ_CHECK(old != NULL);
    }
    uint32_t in_seed = data[1] | 0x100u, out_seed = data[2] | 0x200u;
    size_t length = fuzz_u32(data + 3), old_len = fuzz_u32(data + 7);
    // the length of a real image (a partition's at most) keeps the output buffer small
    length %= 0x80000;
    static ota_delta_t d;
    esp_err_t err;
    size_t start = 0;
    if (data[0] & 1) {
        size_t out = fuzz_u32(data + 11);
        int64_t frm = (int64_t)fuzz_u64(data + 15);
        uint64_t left = fuzz_u64(data + 24);
        err = ota_delta_begin_at(&d, old, old_len, length, out, frm, data[23], left);
        if (err == ESP_OK) {
            FUZZ_CHECK(out <= length && frm >= 0 && (uint64_t)frm <= old_len);
            FUZZ_CHECK(left <= length - out);
            FUZZ_CHECK(data[23] != OTA_DELTA_DIFF || left <= old_len - (uint64_t)frm);
            start = out;
        }
    } else {
        err = ota_delta_begin(&d, old, old_len, length);
    }
    const uint8_t *patch = data + HEADER;
    size_t len = size - HEADER, pos = 0, total = start;
    esp_err_t first = err;
    while (pos < len && err == ESP_OK) {
        size_t n = fuzz_piece(&in_seed, len - pos), room = fuzz_piece(&out_seed, 20000);
        uint8_t *in = fuzz_dup(patch + pos, n), *out = malloc(room);
        size_t used = 0, made = 0;
        err = ota_delta_run(&d, in, n, &used, out, room, &made);
        FUZZ_CHECK(used <= n && made <= room);
        FUZZ_CHECK(err != ESP_OK || used > 0 || made > 0); // no stall: input and room given
        FUZZ_CHECK(err == ESP_OK || first == ESP_OK || err == first);
        total += made;
        FUZZ_CHECK(total <= length);
        pos += used;
        free(in);
        free(out);
        // It stops with input left only when its room is full (at the image's end, input
        // left is an error).
        FUZZ_CHECK(err != ESP_OK || used == n || made == room);
    }
    if (err == ESP_OK) {
        FUZZ_CHECK(pos == len);
        err = ota_delta_end(&d);
        FUZZ_CHECK((err == ESP_OK) == ota_delta_done(&d));
        FUZZ_CHECK(err != ESP_OK || total == length);
    }
    // After an error every call returns it again, and does nothing.
    if (err != ESP_OK) {
        size_t used = 1, made = 1;
        uint8_t b = 0, o;
        FUZZ_CHECK(ota_delta_run(&d, &b, 1, &used, &o, 1, &made) == err);
        FUZZ_CHECK(used == 0 && made == 0);
    }
    return 0;
}

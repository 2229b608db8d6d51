// The delta-patch applier of the core: a detools sequential patch (compression "none", bsdiff
// blocks) applied to the old image in a partition, as python/ota/delta.py's Patch applies it,
// with the same checks and errors. Plain C: no MicroPython header, no allocation, never raises.
//
// The patch is pushed in, in pieces of any size (down to one byte: a size field may be cut
// anywhere), and the new image comes out into the caller's buffer:
//
//   ota_delta_begin(&d, old, old_len, length);      (or ota_delta_begin_at(), at a checkpoint)
//   while not ota_delta_done(&d):
//       n = read(in, ...)      0 at the end of the patch stream: ota_delta_end() says whether
//                              the patch was complete (OTA_ERR_DELTA_TRUNCATED if not)
//       ota_delta_run(&d, in, n, &used, out, room, &made)     repeat while used < n
//
// The patch format (detools, "sequential" type): a byte 0x00 (type sequential, compression
// none), the new image's length, a 0 (no data-format part), then blocks: diff size, diff bytes
// (each added to the old image's byte at `frm`, mod 256), extra size, extra bytes (copied),
// adjustment (added to `frm`), until the image is complete. Sizes: 6 bits and a sign (0x40) in
// the first byte, 7 bits in each next one, 0x80 in a byte that has a next one.
//
// Old-image bytes are read through esp_partition_read() in aligned windows of OTA_DELTA_OLD_BUF
// bytes, kept in the state: a window is read once while the patch walks through it forward.
#ifndef OTA_DELTA_H
#define OTA_DELTA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "esp_err.h"
#include "esp_partition.h"
#include "ota_config.h"
#include "ota_core.h"

#if OTA_DELTA_OLD_BUF & (OTA_DELTA_OLD_BUF - 1) || 4096 % OTA_DELTA_OLD_BUF
#error "OTA_DELTA_OLD_BUF must be a power of two that divides 4096"
#endif

// Phases, as in a checkpoint of an MPZ1 header (host/mpota/delta.py, python/ota/delta.py)
#define OTA_DELTA_DIFF (1)
#define OTA_DELTA_EXTRA (2)

typedef enum {
    OTA_DELTA_S_TYPE = 0, // the first byte: 0x00, sequential without compression
    OTA_DELTA_S_LENGTH, // the new image's length
    OTA_DELTA_S_FORMAT, // the data-format part's size: 0
    OTA_DELTA_S_DIFF_SIZE,
    OTA_DELTA_S_DIFF, // in a diff block: `left` bytes to go
    OTA_DELTA_S_EXTRA_SIZE,
    OTA_DELTA_S_EXTRA, // in an extra block: `left` bytes to go
    OTA_DELTA_S_ADJUST, // the adjustment of frm after an extra block
    OTA_DELTA_S_END, // the image is complete: any further patch byte is an error
    OTA_DELTA_S_FAILED, // an error was returned: the applier is of no more use
} ota_delta_step_t;

typedef struct {
    const esp_partition_t *old; // the old image (the running partition)
    size_t old_len; // its length: diff blocks read only [0, old_len)
    size_t length; // of the new image
    size_t out; // image bytes made
    int64_t frm; // where the next diff byte's old byte is
    uint64_t left; // bytes to go in the current diff or extra block
    ota_delta_step_t step;
    // a size field being decoded (it may arrive over several pieces)
    uint64_t val;
    uint8_t shift; // 0: no byte of it yet
    bool neg;
    esp_err_t err; // the error that stopped it (step OTA_DELTA_S_FAILED)
    size_t win; // the old image's offset of buf[0]
    bool have_win; // buf holds that window
    uint8_t buf[OTA_DELTA_OLD_BUF];
} ota_delta_t;

// Start at the beginning of a patch. ESP_ERR_INVALID_ARG when old_len is not within the
// partition `old`.
esp_err_t ota_delta_begin(ota_delta_t *d, const esp_partition_t *old, size_t old_len,
    size_t length);
// Start at a checkpoint: `out` image bytes made, the old image at `frm`, in `phase`
// (OTA_DELTA_DIFF or OTA_DELTA_EXTRA, else OTA_ERR_DELTA_CHECKPOINT) with `left` bytes of that
// block to go. Every field is bounded, whatever the caller checked: out <= length and left <=
// length - out (else OTA_ERR_DELTA_PAST_END), 0 <= frm <= old_len and, in a diff block, left <=
// old_len - frm (else OTA_ERR_DELTA_OUTSIDE).
esp_err_t ota_delta_begin_at(ota_delta_t *d, const esp_partition_t *old, size_t old_len,
    size_t length, size_t out, int64_t frm, int phase, uint64_t left);
// Take up to in_len patch bytes, make up to out_len image bytes at `out`; *used and *made say
// how many. It stops when `in` is used up, `out` is full (with patch bytes left in `in` that
// make image bytes) or the image is complete. Errors: OTA_ERR_DELTA_* (the patch's), and
// esp_partition_read()'s; after one, every call returns it again.
esp_err_t ota_delta_run(ota_delta_t *d, const uint8_t *in, size_t in_len, size_t *used,
    uint8_t *out, size_t out_len, size_t *made);
// The patch stream has ended: ESP_OK if the image is complete, else OTA_ERR_DELTA_TRUNCATED.
esp_err_t ota_delta_end(ota_delta_t *d);
// The image is complete (every further patch byte would be OTA_ERR_DELTA_TRAILING).
bool ota_delta_done(const ota_delta_t *d);

#endif

// The OTA update session: plain C over ESP-IDF's esp_ota_* and esp_partition_* API. No
// MicroPython header, no allocation, never raises: every function returns an esp_err_t.
//
// One update, step by step:
// 1. ota_core_begin(): running and next-update partitions, the expected length fits.
// 2. ota_core_write() (or ota_core_space() + ota_core_commit(), for a reader that fills the
//    session's buffer itself): the first 288 bytes (image header + segment header +
//    esp_app_desc_t) are held back and checked (magic 0xE9, this chip's id, app description
//    magic) before anything is erased. Then the running app's PENDING_VERIFY state is dealt
//    with on purpose (confirmed, or refused), esp_ota_begin() erases the first 64 KB block and
//    each next block is erased just ahead of the data (known length or not), and every byte is
//    hashed. Bytes are collected in the session's buffer and passed to
//    esp_ota_write() in whole OTA_BUFFER_SIZE pieces at that size's boundaries (the head with
//    the rest of its first piece), whatever the sizes they arrive in, so that every flash page
//    is programmed once; data handed to ota_core_write() in whole aligned pieces goes to flash
//    straight from the caller's memory.
// 3. ota_core_finish(): length and SHA-256 of the received bytes, esp_ota_end() (image
//    verification: esp_image_verify() reads the whole image), then, with verify, the proof that
//    the slot holds the bytes received, then (on request) esp_ota_set_boot_partition() (which
//    reads the whole image again). For an image with an appended SHA-256 (hash_appended, as
//    every MicroPython build has) esp_ota_end()'s check is that proof once the image on flash
//    is as long as the one received, its digest is the last 32 bytes received, and those are
//    the SHA-256 of the bytes before them: finish() then reads only the image's header, segment
//    headers and digest (esp_image_get_metadata(), about 100 bytes). Otherwise (no digest, a
//    debugger attached or signed-app checks, under which ESP-IDF does not compare the digest)
//    it reads the slot back and hashes it. When esp_ota_end() finds the image invalid, the
//    slot is read back to tell a flash that differs from the bytes received (OTA_ERR_VERIFY)
//    from an image that was invalid as received (ESP_ERR_OTA_VALIDATE_FAILED).
// Any failure after esp_ota_begin() calls esp_ota_abort(); the boot partition never changes
// before the last step.
#ifndef OTA_CORE_H
#define OTA_CORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "esp_err.h"
#include "esp_ota_ops.h"
#include "esp_partition.h"
#include "ota_config.h"
#include "ota_sha256.h"

// Errors of the caller's input, next to ESP-IDF's own codes.
#define OTA_ERR_BASE (0x6A00)
#define OTA_ERR_NOT_APP_IMAGE (OTA_ERR_BASE + 1) // no 0xE9 magic, too many segments
#define OTA_ERR_WRONG_CHIP (OTA_ERR_BASE + 2) // chip id differs from the running firmware's
#define OTA_ERR_NOT_APP_DESC (OTA_ERR_BASE + 3) // no esp_app_desc_t: bootloader, merged bin...
#define OTA_ERR_TOO_SHORT (OTA_ERR_BASE + 4) // fewer than OTA_CORE_HEAD bytes in all
#define OTA_ERR_TOO_LARGE (OTA_ERR_BASE + 5) // more bytes than the partition holds
#define OTA_ERR_NO_DATA (OTA_ERR_BASE + 6) // finish() before any byte
#define OTA_ERR_LENGTH (OTA_ERR_BASE + 7) // received length differs from the expected one
#define OTA_ERR_SHA (OTA_ERR_BASE + 8) // received SHA-256 differs from the expected one
#define OTA_ERR_VERIFY (OTA_ERR_BASE + 9) // read-back SHA-256 differs from the received one
#define OTA_ERR_NO_OTA (OTA_ERR_BASE + 10) // no spare OTA partition (or no otadata)
#define OTA_ERR_CLOSED (OTA_ERR_BASE + 11) // the session is finished or aborted
#define OTA_ERR_KEY (OTA_ERR_BASE + 12) // not an ECDSA P-256 public key
#define OTA_ERR_SIGNATURE (OTA_ERR_BASE + 13) // a signature that does not verify
#define OTA_ERR_STREAM (OTA_ERR_BASE + 14) // a stream's readinto() returned an impossible count
// Errors of a delta patch (ota_delta.c), worded as python/ota/delta.py words them
#define OTA_ERR_DELTA_TRUNCATED (OTA_ERR_BASE + 15) // the patch ends before the image does
#define OTA_ERR_DELTA_SIZE (OTA_ERR_BASE + 16) // a size of more than 41 bits
#define OTA_ERR_DELTA_PAST_END (OTA_ERR_BASE + 17) // a block runs past the new image
#define OTA_ERR_DELTA_OUTSIDE (OTA_ERR_BASE + 18) // a diff block reads outside the old image
#define OTA_ERR_DELTA_KIND (OTA_ERR_BASE + 19) // not sequential, or with compression
#define OTA_ERR_DELTA_LENGTH (OTA_ERR_BASE + 20) // makes an image of another length
#define OTA_ERR_DELTA_DATA_FORMAT (OTA_ERR_BASE + 21) // a detools data-format patch
#define OTA_ERR_DELTA_TRAILING (OTA_ERR_BASE + 22) // bytes after the end of the patch
#define OTA_ERR_DELTA_CHECKPOINT (OTA_ERR_BASE + 23) // a checkpoint not in a diff/extra block

#define OTA_CORE_HEAD (288) // image header 24 + segment header 8 + esp_app_desc_t 256

// Flags of ota_core_begin()
#define OTA_CORE_CONFIRM (1) // if the running app is PENDING_VERIFY, mark it valid first

typedef enum {
    OTA_CORE_IDLE = 0,
    OTA_CORE_WRITING, // begun; esp_ota_begin() not yet called while head_len < OTA_CORE_HEAD
    OTA_CORE_DONE,
    OTA_CORE_ABORTED,
} ota_core_state_t;

typedef struct {
    const esp_partition_t *part; // where the image goes
    const esp_partition_t *running;
    esp_ota_handle_t handle;
    bool handle_open; // esp_ota_begin() succeeded and neither end() nor abort() ran since
    ota_core_state_t state;
    uint32_t flags;
    uint16_t chip_id; // of the running firmware
    size_t expected_len; // 0: unknown
    size_t received; // bytes accepted (and hashed): written + fill
    size_t written; // bytes passed to esp_ota_write(): on flash, a multiple of 4 KB until finish
    size_t fill; // bytes collected in buf, for the image's offsets written.. written + fill
    size_t erased; // bytes of the partition erased so far
    size_t resume_at; // begun at this offset: the bytes before it were written earlier
    ota_sha256_t sha; // of the bytes received, but the last tail_len
    uint8_t tail[OTA_SHA256_LEN]; // the last bytes received: the appended digest, if any
    size_t tail_len; // min(received, 32)
    uint8_t head[OTA_CORE_HEAD]; // the first bytes, checked before the first erase
    size_t head_len;
    // SHA-256 of the slot's first `written` bytes as the last finish() that verified found
    // it: read back, or (read_back false) proven equal to the received one by esp_ota_end()
    uint8_t readback[OTA_SHA256_LEN];
    bool read_back; // the last finish() read the whole image back
    long long bad_count; // what a stream's readinto() returned, refused by ota_core_check_read()
    size_t bad_asked; // the size of the buffer it was given
    const char *bad_what; // NULL: bad_count says it; else what it returned instead of an int
    uint8_t buf[OTA_BUFFER_SIZE]; // the bytes on their way to flash; scratch for read-back
} ota_core_t;

// Start a session writing to the next update partition. expected_len 0 means unknown.
esp_err_t ota_core_begin(ota_core_t *s, size_t expected_len, uint32_t flags);
// Resume an interrupted update: the partition already holds the image's first `offset` bytes
// (a multiple of 4 KB). They are read back and hashed (with buf as scratch, NULL: the
// session's own buffer) so that the final
// SHA-256 still covers every byte, and writing goes on from there through esp_ota_resume()
// (ESP-IDF v5.3.3, v5.4.2, v5.5 and later; ESP_ERR_NOT_SUPPORTED on older versions).
esp_err_t ota_core_begin_at(ota_core_t *s, size_t expected_len, uint32_t flags, size_t offset,
    uint8_t *buf, size_t buf_len);
// After ota_core_begin_at(): the partition is known to be erased from the resume offset up to
// `end` (a multiple of 4 KB), so those sectors are not erased again. Only what the same boot
// saw can say so: ota_core_erased() of the session that stopped there (ota/download.py keeps
// it across a network drop, and in its state file after an update it gave up cleanly). A
// wrong claim cannot install a bad image: finish() checks every byte (esp_ota_end(), verify).
esp_err_t ota_core_assume_erased(ota_core_t *s, size_t end);
// Where the partition is known erased up to, past the bytes on flash (ota_core_t.written): the
// end of the last block erased ahead of the data; `written` itself after a failed program or
// when the data ends inside a sector.
size_t ota_core_erased(const ota_core_t *s);
// Append data to the image. ESP_ERR_INVALID_ARG (and nothing done) for data that overlaps the
// session's own buffer (s->buf).
esp_err_t ota_core_write(ota_core_t *s, const uint8_t *data, size_t len);
// Where the next bytes of the image go, for a reader that fills the session's buffer itself
// (no copy): *room bytes at the returned address, then ota_core_commit() with how many it put
// there (at most *room). NULL when the session is finished or aborted.
uint8_t *ota_core_space(ota_core_t *s, size_t *room);
esp_err_t ota_core_commit(ota_core_t *s, size_t n);
// A stream's readinto() was given a buffer of `asked` bytes and returned `count` (`what` NULL),
// or something that is no usable count (`what` names it, e.g. "float"; a static string). Only
// 0 <= count <= asked is a count of bytes in that buffer: ESP_OK. Anything else is the
// stream's error: the session is aborted before a byte of that read is used, and the result is
// OTA_ERR_STREAM, whose message says what the stream returned.
esp_err_t ota_core_check_read(ota_core_t *s, long long count, size_t asked, const char *what);
// Check and close the image. expect_sha may be NULL, expect_len 0: not checked. verify: prove
// that the slot holds the bytes received (OTA_ERR_VERIFY if not), reading it back in buf (any
// size > 0; NULL: the session's own buffer) when esp_ota_end()'s check cannot prove it (see
// above). set_boot makes it the boot partition.
esp_err_t ota_core_finish(ota_core_t *s, size_t expect_len, const uint8_t *expect_sha,
    bool verify, bool set_boot, uint8_t *buf, size_t buf_len);
// Give up; safe to call at any time and more than once.
void ota_core_abort(ota_core_t *s);
// SHA-256 of the bytes received so far.
void ota_core_sha(const ota_core_t *s, uint8_t out[OTA_SHA256_LEN]);
// Release the hash context (after finish or abort).
void ota_core_free(ota_core_t *s);

// The text of one of the core's own errors (OTA_ERR_*), as the `ota` package words it. s may be
// NULL; expect_len and expect_sha are the arguments of the failed finish().
void ota_core_message(const ota_core_t *s, esp_err_t err, size_t expect_len,
    const uint8_t *expect_sha, char *out, size_t out_len);

// Checks of the first bytes of an image, for a device whose chip id is chip_id.
esp_err_t ota_core_check_head(const uint8_t *head, size_t len, uint16_t chip_id);

// Partitions and their OTA state, for the binding's module functions.
#define OTA_CORE_RUNNING (0)
#define OTA_CORE_BOOT (1)
#define OTA_CORE_NEXT (2)
const esp_partition_t *ota_core_partition(int role);
const esp_partition_t *ota_core_find(const char *label); // an app partition, by label
esp_err_t ota_core_state(const esp_partition_t *part, esp_ota_img_states_t *state);
esp_err_t ota_core_describe(const esp_partition_t *part, esp_app_desc_t *desc);
esp_err_t ota_core_set_boot(const esp_partition_t *part);
esp_err_t ota_core_mark_valid(void);
esp_err_t ota_core_mark_invalid_and_reboot(void);
bool ota_core_rollback_possible(void);

#endif

#include <stdio.h>
#include <string.h>
#if defined(ESP_PLATFORM)
#include "sdkconfig.h"
#endif
#include "esp_app_format.h"
#include "esp_cpu.h"
#include "esp_idf_version.h"
#include "esp_image_format.h"
#include "esp_ota_ops.h"
#include "ota_config.h"
#include "ota_core.h"

#define SECTOR (4096)
#define ALIGN_UP(n, a) (((n) + (a) - 1) / (a) * (a))
#define MIN(a, b) ((a) < (b) ? (a) : (b))
#define MAX(a, b) ((a) > (b) ? (a) : (b))
#define OTA_HUGE (1LL << 30)

#if OTA_BUFFER_SIZE % SECTOR
#error "OTA_BUFFER_SIZE must be a multiple of 4096"
#endif

// esp_ota_resume() arrived in ESP-IDF v5.3.3, v5.4.2 and v5.5.
#define OTA_HAVE_RESUME (ESP_IDF_VERSION >= ESP_IDF_VERSION_VAL(5, 5, 0) \
    || (ESP_IDF_VERSION >= ESP_IDF_VERSION_VAL(5, 4, 2) \
    && ESP_IDF_VERSION < ESP_IDF_VERSION_VAL(5, 5, 0)) \
    || (ESP_IDF_VERSION >= ESP_IDF_VERSION_VAL(5, 3, 3) \
    && ESP_IDF_VERSION < ESP_IDF_VERSION_VAL(5, 4, 0)))

// Whether esp_image_verify() compares an image's appended SHA-256 with the image on flash
// (esp_image_format.c, image_load()): not when it checks a signature instead
// (CONFIG_SECURE_SIGNED_ON_UPDATE), and it takes a mismatch as a pass on FPGA and bring-up
// builds. At run time, not with a debugger attached (esp_cpu_dbgr_is_attached()).
#if defined(CONFIG_SECURE_SIGNED_ON_UPDATE) || defined(CONFIG_IDF_ENV_FPGA) \
    || defined(CONFIG_IDF_ENV_BRINGUP)
#define OTA_IDF_CHECKS_DIGEST (0)
#else
#define OTA_IDF_CHECKS_DIGEST (1)
#endif

#define HASH_APPENDED (23) // offsetof(esp_image_header_t, hash_appended)

static esp_err_t fail(ota_core_t *s, esp_err_t err) {
    ota_core_abort(s);
    return err;
}

// Hash received bytes. The last OTA_SHA256_LEN of them wait in s->tail until more arrive, so
// that s->sha covers the image without its last 32 bytes: where an appended digest is.
static void hash(ota_core_t *s, const uint8_t *data, size_t n) {
    if (n >= OTA_SHA256_LEN) {
        ota_sha256_update(&s->sha, s->tail, s->tail_len);
        ota_sha256_update(&s->sha, data, n - OTA_SHA256_LEN);
        memcpy(s->tail, data + n - OTA_SHA256_LEN, OTA_SHA256_LEN);
        s->tail_len = OTA_SHA256_LEN;
        return;
    }
    size_t keep = OTA_SHA256_LEN - n; // of the tail's bytes, those that stay in it
    if (s->tail_len > keep) {
        size_t out = s->tail_len - keep;
        ota_sha256_update(&s->sha, s->tail, out);
        memmove(s->tail, s->tail + out, keep);
        s->tail_len = keep;
    }
    memcpy(s->tail + s->tail_len, data, n);
    s->tail_len += n;
}

esp_err_t ota_core_check_head(const uint8_t *head, size_t len, uint16_t chip_id) {
    if (len > 0 && head[0] != ESP_IMAGE_HEADER_MAGIC) {
        return OTA_ERR_NOT_APP_IMAGE;
    }
    if (len < OTA_CORE_HEAD) {
        return OTA_ERR_TOO_SHORT;
    }
    if ((uint16_t)(head[12] | head[13] << 8) != chip_id) {
        return OTA_ERR_WRONG_CHIP;
    }
    if (head[1] > ESP_IMAGE_MAX_SEGMENTS) {
        return OTA_ERR_NOT_APP_IMAGE;
    }
    uint32_t magic = head[32] | head[33] << 8 | head[34] << 16 | (uint32_t)head[35] << 24;
    if (magic != ESP_APP_DESC_MAGIC_WORD) {
        return OTA_ERR_NOT_APP_DESC;
    }
    return ESP_OK;
}

static const char *chip_name(unsigned id) {
    static const struct {
        unsigned id;
        const char *name;
    } chips[] = {
        {0, "ESP32"}, {2, "ESP32-S2"}, {5, "ESP32-C3"}, {9, "ESP32-S3"}, {12, "ESP32-C2"},
        {13, "ESP32-C6"}, {16, "ESP32-H2"}, {18, "ESP32-P4"}, {23, "ESP32-C5"},
    };
    for (size_t i = 0; i < sizeof(chips) / sizeof(chips[0]); i++) {
        if (chips[i].id == id) {
            return chips[i].name;
        }
    }
    return "an unknown chip";
}

static void hex32(char *out, const uint8_t *d) {
    for (int i = 0; i < OTA_SHA256_LEN; i++) {
        snprintf(out + 2 * i, 3, "%02x", d[i]);
    }
}

void ota_core_message(const ota_core_t *s, esp_err_t err, size_t expect_len,
    const uint8_t *expect_sha, char *out, size_t out_len) {
    const uint8_t *head = s ? s->head : NULL;
    size_t n = s ? s->head_len : 0;
    char a[65] = "", b[65] = "";
    if (s && (err == OTA_ERR_SHA || err == OTA_ERR_VERIFY)) {
        uint8_t d[OTA_SHA256_LEN];
        ota_core_sha(s, d);
        hex32(a, d);
        hex32(b, err == OTA_ERR_SHA ? expect_sha : s->readback);
    }
    switch (err) {
        case OTA_ERR_NOT_APP_IMAGE:
            if (n > 0 && head[0] != ESP_IMAGE_HEADER_MAGIC) {
                snprintf(out, out_len, "Not an ESP32 app image: it starts with 0x%02x, not 0xe9 "
                    "(use micropython.bin).", head[0]);
            } else {
                snprintf(out, out_len, "Not an ESP32 app image: %d segments (at most 16).",
                    n > 1 ? head[1] : 0);
            }
            break;
        case OTA_ERR_TOO_SHORT:
            snprintf(out, out_len, "Not an ESP32 app image: only %u bytes (an app image has at "
                "least %u).", (unsigned)n, (unsigned)OTA_CORE_HEAD);
            break;
        case OTA_ERR_WRONG_CHIP: {
            unsigned id = n >= 14 ? (unsigned)(head[12] | head[13] << 8) : 0xFFFF;
            unsigned own = s ? s->chip_id : 0xFFFF;
            snprintf(out, out_len, "Image is for %s (chip id %u), but this device is %s "
                "(chip id %u).", chip_name(id), id, chip_name(own), own);
            break;
        }
        case OTA_ERR_NOT_APP_DESC:
            if (n > 32 && head[32] == 0x50) { // esp_bootloader_desc_t.magic_byte
                snprintf(out, out_len, "This is a bootloader image, or a merged firmware.bin "
                    "that starts with the bootloader: write the app image (micropython.bin) "
                    "instead.");
            } else {
                snprintf(out, out_len, "Not an ESP32 app image: no app description "
                    "(0xabcd5432) at offset 32.");
            }
            break;
        case OTA_ERR_TOO_LARGE:
            if (s && s->part && s->received == 0 && s->state != OTA_CORE_WRITING) {
                snprintf(out, out_len, "length (%u bytes) is > size of partition.",
                    (unsigned)s->expected_len);
            } else if (s && s->part) {
                snprintf(out, out_len, "Image is larger than partition '%s' (%u bytes).",
                    s->part->label, (unsigned)s->part->size);
            } else {
                snprintf(out, out_len, "Image is larger than the partition.");
            }
            break;
        case OTA_ERR_NO_DATA:
            snprintf(out, out_len, "No image data was written.");
            break;
        case OTA_ERR_LENGTH:
            snprintf(out, out_len, "Receive %u bytes (expect %u).",
                (unsigned)(s ? s->received : 0), (unsigned)expect_len);
            break;
        case OTA_ERR_SHA:
            snprintf(out, out_len, "SHA mismatch recv=%s expect=%s.", a, b);
            break;
        case OTA_ERR_VERIFY:
            snprintf(out, out_len, "SHA verify failed: write=%s read=%s", a, b);
            break;
        case OTA_ERR_NO_OTA:
            snprintf(out, out_len, "This firmware's partition table has no spare OTA partition "
                "(it needs otadata, ota_0 and ota_1): flash a firmware built with an OTA "
                "partition table, e.g. MicroPython's ESP32_GENERIC with BOARD_VARIANT=OTA.");
            break;
        case OTA_ERR_CLOSED:
            snprintf(out, out_len, "This OTA update was aborted.");
            break;
        case OTA_ERR_KEY:
            snprintf(out, out_len, "public key must be an ECDSA P-256 key "
                "(SubjectPublicKeyInfo)");
            break;
        case OTA_ERR_SIGNATURE:
            snprintf(out, out_len, "The signature does not verify.");
            break;
        case OTA_ERR_STREAM:
            // Counts beyond 30 bits are "a huge int" whatever the port's small-int range, so
            // that every port and the pure backend say the same.
            if (s && (s->bad_what || s->bad_count >= OTA_HUGE || s->bad_count <= -OTA_HUGE)) {
                snprintf(out, out_len, "Stream error: readinto() returned a %s for a buffer of "
                    "%u bytes.", s->bad_what ? s->bad_what : "huge int", (unsigned)s->bad_asked);
            } else {
                // %d: MicroPython's own printf (unix port) has no %lld.
                snprintf(out, out_len, "Stream error: readinto() returned %d for a buffer of "
                    "%u bytes.", s ? (int)s->bad_count : 0, (unsigned)(s ? s->bad_asked : 0));
            }
            break;
        case OTA_ERR_DELTA_TRUNCATED:
            snprintf(out, out_len, "The patch is truncated.");
            break;
        case OTA_ERR_DELTA_SIZE:
            snprintf(out, out_len, "The patch holds a size that is too large: corrupted.");
            break;
        case OTA_ERR_DELTA_PAST_END:
            snprintf(out, out_len, "The patch's blocks run past the new image: corrupted patch.");
            break;
        case OTA_ERR_DELTA_OUTSIDE:
            snprintf(out, out_len, "The patch reads outside the old image: corrupted patch.");
            break;
        case OTA_ERR_DELTA_KIND:
            snprintf(out, out_len, "The patch is not a detools sequential patch without "
                "compression.");
            break;
        case OTA_ERR_DELTA_LENGTH:
            snprintf(out, out_len, "The patch makes an image of another length.");
            break;
        case OTA_ERR_DELTA_DATA_FORMAT:
            snprintf(out, out_len, "detools data-format patches are not supported.");
            break;
        case OTA_ERR_DELTA_TRAILING:
            snprintf(out, out_len, "The patch goes on past its end: corrupted.");
            break;
        case OTA_ERR_DELTA_CHECKPOINT:
            snprintf(out, out_len, "The transfer's checkpoint is not in a diff or extra block.");
            break;
        default:
            snprintf(out, out_len, "OTA error 0x%x.", (unsigned)err);
            break;
    }
}

esp_err_t ota_core_begin(ota_core_t *s, size_t expected_len, uint32_t flags) {
    memset(s, 0, sizeof(*s));
    s->state = OTA_CORE_ABORTED; // until everything below succeeds
    s->running = esp_ota_get_running_partition();
    if (s->running == NULL) {
        return ESP_ERR_NOT_FOUND;
    }
    if (esp_partition_find_first(ESP_PARTITION_TYPE_DATA, ESP_PARTITION_SUBTYPE_DATA_OTA,
        NULL) == NULL) {
        return OTA_ERR_NO_OTA;
    }
    s->part = esp_ota_get_next_update_partition(NULL);
    if (s->part == NULL || s->part == s->running) {
        return OTA_ERR_NO_OTA;
    }
    s->expected_len = expected_len;
    if (expected_len > s->part->size) {
        return OTA_ERR_TOO_LARGE;
    }
    esp_image_header_t hdr;
    esp_err_t err = esp_partition_read(s->running, 0, &hdr, sizeof(hdr));
    if (err != ESP_OK) {
        return err;
    }
    s->chip_id = hdr.chip_id;
    s->expected_len = expected_len;
    s->flags = flags;
    ota_sha256_init(&s->sha);
    s->state = OTA_CORE_WRITING;
    return ESP_OK;
}

static esp_err_t start(ota_core_t *s);

esp_err_t ota_core_begin_at(ota_core_t *s, size_t expected_len, uint32_t flags, size_t offset,
    uint8_t *buf, size_t buf_len) {
    esp_err_t err = ota_core_begin(s, expected_len, flags);
    if (err != ESP_OK || offset == 0) {
        return err;
    }
    #if !OTA_HAVE_RESUME
    (void)buf;
    (void)buf_len;
    return fail(s, ESP_ERR_NOT_SUPPORTED);
    #else
    if (buf == NULL) {
        buf = s->buf;
        buf_len = sizeof(s->buf);
    }
    if (offset % SECTOR || offset > s->part->size || (expected_len && offset > expected_len)
        || offset < OTA_CORE_HEAD || buf_len == 0) {
        return fail(s, ESP_ERR_INVALID_ARG);
    }
    for (size_t pos = 0; pos < offset; pos += buf_len) {
        size_t n = MIN(buf_len, offset - pos);
        err = esp_partition_read(s->part, pos, buf, n);
        if (err != ESP_OK) {
            return fail(s, err);
        }
        if (pos < OTA_CORE_HEAD) {
            memcpy(s->head + pos, buf, MIN(n, OTA_CORE_HEAD - pos));
        }
        hash(s, buf, n);
    }
    s->head_len = OTA_CORE_HEAD;
    s->received = s->written = s->erased = s->resume_at = offset;
    // Check the head, settle PENDING_VERIFY and open the handle now (esp_ota_resume() erases
    // nothing), so that a firmware without esp_ota_resume() says so before any byte is sent.
    err = start(s);
    return err == ESP_OK ? ESP_OK : fail(s, err);
    #endif
}

esp_err_t ota_core_assume_erased(ota_core_t *s, size_t end) {
    if (s->state != OTA_CORE_WRITING || !s->resume_at || s->written != s->resume_at
        || s->fill || end % SECTOR || end < s->resume_at || end > s->part->size) {
        return ESP_ERR_INVALID_ARG;
    }
    s->erased = MAX(s->erased, end);
    return ESP_OK;
}

size_t ota_core_erased(const ota_core_t *s) {
    return s->written % SECTOR || s->state == OTA_CORE_DONE ? s->written : s->erased;
}

// Erase the partition up to `end` (bytes), in 64 KB blocks (after a resume, sectors up to the
// first block boundary).
static esp_err_t erase_to(ota_core_t *s, size_t end) {
    while (s->erased < end) {
        size_t n = OTA_ERASE_BLOCK - s->erased % OTA_ERASE_BLOCK;
        n = MIN(n, s->part->size - s->erased);
        esp_err_t err = esp_partition_erase_range(s->part, s->erased, n);
        if (err != ESP_OK) {
            return err;
        }
        s->erased += n;
    }
    return ESP_OK;
}

// The first bytes are in: check them, settle the running app's state, open the OTA handle.
static esp_err_t start(ota_core_t *s) {
    esp_err_t err = ota_core_check_head(s->head, s->head_len, s->chip_id);
    if (err != ESP_OK) {
        return err;
    }
    // esp_ota_begin() refuses to start while the running app is unconfirmed (with rollback
    // enabled): writing an update is taken as proof that it works, when the caller says so.
    esp_ota_img_states_t st;
    if (esp_ota_get_state_partition(s->running, &st) == ESP_OK
        && st == ESP_OTA_IMG_PENDING_VERIFY) {
        if (!(s->flags & OTA_CORE_CONFIRM)) {
            return ESP_ERR_OTA_ROLLBACK_INVALID_STATE;
        }
        err = esp_ota_mark_app_valid_cancel_rollback();
        if (err != ESP_OK) {
            return err;
        }
    }
    #if OTA_HAVE_RESUME
    if (s->resume_at) {
        // Nothing is erased up front: erase_to() clears the partition from the resume offset on,
        // including whatever an interrupted write left half done there.
        s->handle = 0;
        err = esp_ota_resume(s->part, 0, s->resume_at, &s->handle);
        s->handle_open = err == ESP_OK;
        return err;
    }
    #endif
    // esp_ota_begin() erases the size it is given (rounded up to 4 KB; esp_partition_erase_range()
    // takes 64 KB block erases where it can): the first block only, known length or not.
    // erase_to() erases each next block just ahead of the data, so that the first byte is
    // written after one block's erase, and an update interrupted half way has erased only the
    // blocks it wrote in: its resumption erases from where it resumes (esp_ota_resume() erases
    // nothing), not the rest of the image a second time. (OTA_WITH_SEQUENTIAL_WRITES would have
    // esp_ota_write() erase 4 KB sectors itself, about 3x slower per byte than blocks.)
    size_t first = MIN((size_t)OTA_ERASE_BLOCK, (size_t)s->part->size);
    s->handle = 0;
    err = esp_ota_begin(s->part, first, &s->handle);
    s->handle_open = s->handle != 0; // a failed erase still hands out a handle to abort
    if (err != ESP_OK) {
        return err;
    }
    s->erased = ALIGN_UP(first, (size_t)SECTOR);
    return ESP_OK; // the head is the start of the buffer: it goes to flash with the rest of it
}

// Bytes the buffer collects before they go to flash: up to the next OTA_BUFFER_SIZE boundary of
// the image (after a resume at a 4 KB boundary, the first piece may be shorter).
static size_t cap(const ota_core_t *s) {
    return OTA_BUFFER_SIZE - s->written % OTA_BUFFER_SIZE;
}

// Program what the buffer holds, after erasing as far as it reaches.
static esp_err_t flush(ota_core_t *s) {
    if (s->fill == 0) {
        return ESP_OK;
    }
    esp_err_t err = erase_to(s, s->written + s->fill);
    if (err == ESP_OK) {
        err = esp_ota_write(s->handle, s->buf, s->fill);
    }
    if (err != ESP_OK) {
        s->erased = MIN(s->erased, s->written); // a failed program may have left bits beyond
        return fail(s, err);
    }
    s->written += s->fill;
    s->fill = 0;
    return ESP_OK;
}

uint8_t *ota_core_space(ota_core_t *s, size_t *room) {
    if (s->state != OTA_CORE_WRITING) {
        *room = 0;
        return NULL;
    }
    *room = cap(s) - s->fill;
    return s->buf + s->fill;
}

esp_err_t ota_core_commit(ota_core_t *s, size_t n) {
    if (s->state != OTA_CORE_WRITING) {
        return OTA_ERR_CLOSED;
    }
    if (n > cap(s) - s->fill) {
        return fail(s, ESP_ERR_INVALID_SIZE);
    }
    if (n == 0) {
        return ESP_OK;
    }
    const uint8_t *data = s->buf + s->fill;
    if (n > s->part->size - s->received) {
        return fail(s, OTA_ERR_TOO_LARGE);
    }
    hash(s, data, n);
    s->received += n;
    s->fill += n;
    if (!s->handle_open) {
        size_t k = MIN(n, OTA_CORE_HEAD - s->head_len);
        memcpy(s->head + s->head_len, data, k);
        s->head_len += k;
        if (s->head[0] != ESP_IMAGE_HEADER_MAGIC) {
            return fail(s, OTA_ERR_NOT_APP_IMAGE);
        }
        if (s->head_len < OTA_CORE_HEAD) {
            return ESP_OK;
        }
        esp_err_t err = start(s);
        if (err != ESP_OK) {
            return fail(s, err);
        }
    }
    return s->fill == cap(s) ? flush(s) : ESP_OK;
}

esp_err_t ota_core_write(ota_core_t *s, const uint8_t *data, size_t len) {
    if (s->state != OTA_CORE_WRITING) {
        return OTA_ERR_CLOSED;
    }
    // Data inside the session's own buffer would be copied onto itself: refused, nothing done.
    uintptr_t at = (uintptr_t)data, own = (uintptr_t)s->buf;
    if (len && at < own + sizeof(s->buf) && own < at + len) {
        return ESP_ERR_INVALID_ARG;
    }
    while (len > 0) {
        size_t room;
        uint8_t *p = ota_core_space(s, &room);
        if (p == NULL) {
            return OTA_ERR_CLOSED;
        }
        if (s->handle_open && s->fill == 0 && len >= room) {
            // Whole pieces at piece boundaries: to flash from the caller's memory, no copy.
            size_t n = room + (len - room) / OTA_BUFFER_SIZE * OTA_BUFFER_SIZE;
            if (n > s->part->size - s->received) {
                return fail(s, OTA_ERR_TOO_LARGE);
            }
            esp_err_t err = erase_to(s, s->written + n);
            if (err == ESP_OK) {
                hash(s, data, n);
                s->received += n;
                err = esp_ota_write(s->handle, data, n);
            }
            if (err != ESP_OK) {
                return fail(s, err);
            }
            s->written += n;
            data += n;
            len -= n;
            continue;
        }
        size_t k = MIN(room, len);
        memcpy(p, data, k);
        esp_err_t err = ota_core_commit(s, k);
        if (err != ESP_OK) {
            return err;
        }
        data += k;
        len -= k;
    }
    return ESP_OK;
}

esp_err_t ota_core_check_read(ota_core_t *s, long long count, size_t asked, const char *what) {
    if (what == NULL && count >= 0 && (unsigned long long)count <= asked) {
        return ESP_OK;
    }
    s->bad_count = count;
    s->bad_asked = asked;
    s->bad_what = what;
    return fail(s, OTA_ERR_STREAM);
}

static esp_err_t readback(ota_core_t *s, uint8_t *buf, size_t buf_len) {
    s->read_back = true;
    ota_sha256_t h;
    ota_sha256_init(&h);
    esp_err_t err = ESP_OK;
    for (size_t pos = 0; pos < s->written && err == ESP_OK; pos += buf_len) {
        size_t n = MIN(buf_len, s->written - pos);
        err = esp_partition_read(s->part, pos, buf, n);
        ota_sha256_update(&h, buf, n);
    }
    ota_sha256_peek(&h, s->readback);
    ota_sha256_free(&h);
    return err;
}

// Does the esp_image_verify() that esp_ota_end() has just run prove that the slot holds the
// bytes received? For an image with an appended SHA-256 it hashes the image on flash from its
// header to its checksum byte and compares that with the 32 bytes after them on flash. So if the
// image on flash is as long as the one received (ESP-IDF's reckoning, from the segment headers
// on flash), its last 32 bytes are the last 32 received, and those are the SHA-256 of the bytes
// received before them, then the flash's bytes before them have the SHA-256 of the received
// ones: they are the same bytes. esp_image_get_metadata() reads the header, the segment headers
// and the digest: about 100 bytes, where a read-back reads the whole image.
static bool proven_by_image_verify(ota_core_t *s) {
    if (!OTA_IDF_CHECKS_DIGEST || s->head[HASH_APPENDED] == 0 || s->tail_len != OTA_SHA256_LEN
        || esp_cpu_dbgr_is_attached()) {
        return false;
    }
    uint8_t body[OTA_SHA256_LEN];
    ota_sha256_peek(&s->sha, body); // the received bytes but the last 32
    if (memcmp(body, s->tail, OTA_SHA256_LEN) != 0) {
        return false; // esp_ota_end() would have refused it; not for us to prove anything
    }
    esp_image_metadata_t md;
    const esp_partition_pos_t pos = {.offset = s->part->address, .size = s->part->size};
    return esp_image_get_metadata(&pos, &md) == ESP_OK && md.image.hash_appended
           && md.image_len == s->received
           && memcmp(md.image_digest, s->tail, OTA_SHA256_LEN) == 0;
}

esp_err_t ota_core_finish(ota_core_t *s, size_t expect_len, const uint8_t *expect_sha,
    bool verify, bool set_boot, uint8_t *buf, size_t buf_len) {
    if (s->state != OTA_CORE_WRITING) {
        return OTA_ERR_CLOSED;
    }
    if (!s->handle_open) {
        // Fewer than OTA_CORE_HEAD bytes arrived: nothing was erased or written.
        if (s->received == 0) {
            return fail(s, OTA_ERR_NO_DATA);
        }
        return fail(s, ota_core_check_head(s->head, s->head_len, s->chip_id));
    }
    if (buf == NULL) {
        buf = s->buf;
        buf_len = sizeof(s->buf);
    }
    if (verify && buf_len == 0) {
        return fail(s, ESP_ERR_INVALID_ARG);
    }
    esp_err_t err = flush(s); // the last piece
    if (err != ESP_OK) {
        return err;
    }
    if (expect_len && expect_len != s->received) {
        return fail(s, OTA_ERR_LENGTH);
    }
    uint8_t digest[OTA_SHA256_LEN];
    ota_core_sha(s, digest);
    if (expect_sha && memcmp(expect_sha, digest, sizeof(digest)) != 0) {
        return fail(s, OTA_ERR_SHA);
    }
    s->read_back = false;
    s->handle_open = false; // esp_ota_end() frees the handle, whatever it returns
    err = esp_ota_end(s->handle);
    if (err != ESP_OK) {
        // An invalid image: if the flash differs from the bytes received, that is the error.
        if (verify && err == ESP_ERR_OTA_VALIDATE_FAILED && readback(s, buf, buf_len) == ESP_OK
            && memcmp(s->readback, digest, sizeof(digest)) != 0) {
            err = OTA_ERR_VERIFY;
        }
        return fail(s, err);
    }
    if (verify) {
        if (proven_by_image_verify(s)) {
            memcpy(s->readback, digest, sizeof(digest));
        } else {
            err = readback(s, buf, buf_len);
            if (err != ESP_OK) {
                return fail(s, err);
            }
            if (memcmp(s->readback, digest, sizeof(digest)) != 0) {
                return fail(s, OTA_ERR_VERIFY);
            }
        }
    }
    if (set_boot) {
        err = esp_ota_set_boot_partition(s->part);
        if (err != ESP_OK) {
            return fail(s, err);
        }
    }
    s->state = OTA_CORE_DONE;
    return ESP_OK;
}

void ota_core_abort(ota_core_t *s) {
    s->fill = 0;
    if (s->handle_open) {
        esp_ota_abort(s->handle);
        s->handle_open = false;
    }
    if (s->state != OTA_CORE_DONE) {
        s->state = OTA_CORE_ABORTED;
    }
}

void ota_core_sha(const ota_core_t *s, uint8_t out[OTA_SHA256_LEN]) {
    ota_sha256_peek_more(&s->sha, s->tail, s->tail_len, out);
}

void ota_core_free(ota_core_t *s) {
    ota_sha256_free(&s->sha);
}

const esp_partition_t *ota_core_partition(int role) {
    switch (role) {
        case OTA_CORE_RUNNING:
            return esp_ota_get_running_partition();
        case OTA_CORE_BOOT:
            return esp_ota_get_boot_partition();
        default: {
            const esp_partition_t *next = esp_ota_get_next_update_partition(NULL);
            return next == esp_ota_get_running_partition() ? NULL : next;
        }
    }
}

const esp_partition_t *ota_core_find(const char *label) {
    return esp_partition_find_first(ESP_PARTITION_TYPE_APP, ESP_PARTITION_SUBTYPE_ANY, label);
}

esp_err_t ota_core_state(const esp_partition_t *part, esp_ota_img_states_t *state) {
    return esp_ota_get_state_partition(part, state);
}

esp_err_t ota_core_describe(const esp_partition_t *part, esp_app_desc_t *desc) {
    return esp_ota_get_partition_description(part, desc);
}

esp_err_t ota_core_set_boot(const esp_partition_t *part) {
    return esp_ota_set_boot_partition(part);
}

esp_err_t ota_core_mark_valid(void) {
    return esp_ota_mark_app_valid_cancel_rollback();
}

esp_err_t ota_core_mark_invalid_and_reboot(void) {
    return esp_ota_mark_app_invalid_rollback_and_reboot();
}

bool ota_core_rollback_possible(void) {
    return esp_ota_check_rollback_is_possible();
}

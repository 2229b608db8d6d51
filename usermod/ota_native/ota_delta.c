#include <string.h>
#include "ota_delta.h"

#define MIN(a, b) ((a) < (b) ? (a) : (b))
#define SIZE_MAX_SHIFT (34) // a size has at most 6 + 5 * 7 = 41 bits: detools' and ours

esp_err_t ota_delta_begin(ota_delta_t *d, const esp_partition_t *old, size_t old_len,
    size_t length) {
    memset(d, 0, sizeof(*d));
    d->old = old;
    d->old_len = old_len;
    d->length = length;
    d->step = OTA_DELTA_S_TYPE;
    if (old == NULL || old_len > old->size) {
        d->step = OTA_DELTA_S_FAILED;
        d->err = ESP_ERR_INVALID_ARG;
    }
    return d->err;
}

// A diff or extra block of n bytes starts: it must end within the new image, and a diff block
// must read within the old one. No sum can overflow: out <= length and (for a diff block)
// 0 <= frm <= old_len are checked first, then n against what remains.
static esp_err_t block(ota_delta_t *d, int phase, int64_t n) {
    if (n < 0 || d->out > d->length || (uint64_t)n > d->length - d->out) {
        return OTA_ERR_DELTA_PAST_END;
    }
    if (phase == OTA_DELTA_DIFF && (d->frm < 0 || (uint64_t)d->frm > d->old_len
                                    || (uint64_t)n > d->old_len - (uint64_t)d->frm)) {
        return OTA_ERR_DELTA_OUTSIDE;
    }
    d->step = phase == OTA_DELTA_DIFF ? OTA_DELTA_S_DIFF : OTA_DELTA_S_EXTRA;
    d->left = (uint64_t)n;
    return ESP_OK;
}

// Every field of the checkpoint is bounded here, whoever the caller: the phase, out <= length,
// frm within the old image (where the diff block before the checkpoint left it, in either
// phase), left within what remains of the new image (and, in a diff block, of the old one).
esp_err_t ota_delta_begin_at(ota_delta_t *d, const esp_partition_t *old, size_t old_len,
    size_t length, size_t out, int64_t frm, int phase, uint64_t left) {
    esp_err_t err = ota_delta_begin(d, old, old_len, length);
    if (err == ESP_OK && phase != OTA_DELTA_DIFF && phase != OTA_DELTA_EXTRA) {
        err = OTA_ERR_DELTA_CHECKPOINT;
    } else if (err == ESP_OK && (out > length || left > length - out || left > (uint64_t)INT64_MAX)) {
        err = OTA_ERR_DELTA_PAST_END;
    } else if (err == ESP_OK && (frm < 0 || (uint64_t)frm > old_len)) {
        err = OTA_ERR_DELTA_OUTSIDE;
    } else if (err == ESP_OK) {
        d->out = out;
        d->frm = frm;
        err = block(d, phase, (int64_t)left);
    }
    if (err != ESP_OK) {
        d->step = OTA_DELTA_S_FAILED;
        d->err = err;
    }
    return err;
}

// out[i] = in[i] + old[frm + i] (mod 256) for n bytes, old-image bytes read a window at a time.
static esp_err_t add_old(ota_delta_t *d, uint8_t *out, const uint8_t *in, size_t n) {
    while (n > 0) {
        size_t at = (size_t)d->frm;
        size_t win = at & ~(size_t)(OTA_DELTA_OLD_BUF - 1);
        if (!d->have_win || d->win != win) {
            d->have_win = false;
            esp_err_t err = esp_partition_read(d->old, win, d->buf,
                MIN((size_t)OTA_DELTA_OLD_BUF, d->old->size - win));
            if (err != ESP_OK) {
                return err;
            }
            d->win = win;
            d->have_win = true;
        }
        const uint8_t *o = d->buf + (at - win);
        size_t k = MIN(n, OTA_DELTA_OLD_BUF - (at - win));
        for (size_t i = 0; i < k; i++) {
            out[i] = (uint8_t)(in[i] + o[i]);
        }
        out += k;
        in += k;
        n -= k;
        d->frm += k;
    }
    return ESP_OK;
}

// The size field that ends with byte b, if it does: *done set, *v its value.
static esp_err_t size_byte(ota_delta_t *d, uint8_t b, bool *done, int64_t *v) {
    if (d->shift == 0) {
        d->neg = b & 0x40;
        d->val = b & 0x3F;
        d->shift = 6;
    } else {
        d->val |= (uint64_t)(b & 0x7F) << d->shift;
        d->shift += 7;
    }
    *done = !(b & 0x80);
    if (!*done) {
        return d->shift > SIZE_MAX_SHIFT ? OTA_ERR_DELTA_SIZE : ESP_OK;
    }
    *v = d->neg ? -(int64_t)d->val : (int64_t)d->val;
    d->shift = 0;
    return ESP_OK;
}

// One size field complete: act on it, in the current step.
static esp_err_t field(ota_delta_t *d, int64_t v) {
    switch (d->step) {
        case OTA_DELTA_S_LENGTH:
            if (v != (int64_t)d->length) {
                return OTA_ERR_DELTA_LENGTH;
            }
            d->step = OTA_DELTA_S_FORMAT;
            return ESP_OK;
        case OTA_DELTA_S_FORMAT:
            if (v != 0) {
                return OTA_ERR_DELTA_DATA_FORMAT;
            }
            d->step = OTA_DELTA_S_DIFF_SIZE;
            return ESP_OK;
        case OTA_DELTA_S_DIFF_SIZE:
            return block(d, OTA_DELTA_DIFF, v);
        case OTA_DELTA_S_EXTRA_SIZE:
            return block(d, OTA_DELTA_EXTRA, v);
        default: // OTA_DELTA_S_ADJUST
            // frm is within [0, old_len] here (the diff block before checked it) and |v| <
            // 2^41, but the sum is checked all the same: a frm that would wrap is outside.
            if (v > 0 ? d->frm > INT64_MAX - v : d->frm < INT64_MIN - v) {
                return OTA_ERR_DELTA_OUTSIDE;
            }
            d->frm += v;
            d->step = d->out >= d->length ? OTA_DELTA_S_END : OTA_DELTA_S_DIFF_SIZE;
            return ESP_OK;
    }
}

esp_err_t ota_delta_run(ota_delta_t *d, const uint8_t *in, size_t in_len, size_t *used,
    uint8_t *out, size_t out_len, size_t *made) {
    size_t i = 0, o = 0;
    esp_err_t err = d->err;
    while (err == ESP_OK) {
        if (d->step == OTA_DELTA_S_DIFF || d->step == OTA_DELTA_S_EXTRA) {
            bool diff = d->step == OTA_DELTA_S_DIFF;
            if (d->left == 0) {
                d->step = diff ? OTA_DELTA_S_EXTRA_SIZE : OTA_DELTA_S_ADJUST;
                continue;
            }
            size_t k = MIN(in_len - i, out_len - o);
            k = (size_t)MIN((uint64_t)k, d->left);
            if (k == 0) {
                break;
            }
            if (diff) {
                err = add_old(d, out + o, in + i, k);
            } else {
                memmove(out + o, in + i, k);
            }
            if (err == ESP_OK) {
                i += k;
                o += k;
                d->left -= k;
                d->out += k;
            }
            continue;
        }
        if (d->step == OTA_DELTA_S_END) {
            if (i < in_len) {
                err = OTA_ERR_DELTA_TRAILING;
            }
            break;
        }
        if (i == in_len) {
            break;
        }
        uint8_t b = in[i++];
        if (d->step == OTA_DELTA_S_TYPE) {
            if (b != 0) {
                err = OTA_ERR_DELTA_KIND;
            }
            d->step = OTA_DELTA_S_LENGTH;
            continue;
        }
        bool done;
        int64_t v = 0;
        err = size_byte(d, b, &done, &v);
        if (err == ESP_OK && done) {
            err = field(d, v);
        }
    }
    *used = i;
    *made = o;
    if (err != ESP_OK) {
        d->step = OTA_DELTA_S_FAILED;
        d->err = err;
    }
    return err;
}

esp_err_t ota_delta_end(ota_delta_t *d) {
    if (d->step != OTA_DELTA_S_END && d->err == ESP_OK) {
        d->step = OTA_DELTA_S_FAILED;
        d->err = OTA_ERR_DELTA_TRUNCATED;
    }
    return d->err;
}

bool ota_delta_done(const ota_delta_t *d) {
    return d->step == OTA_DELTA_S_END;
}

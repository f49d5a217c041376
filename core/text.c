/* Bounded text (see text.h).
 *
 * text_append() formats into what is left of the buffer; when the piece
 * did not fit, it backs off to leave room for the cut mark, then off any
 * character the cut split, and writes the mark.  A buffer that already
 * ends in the mark is full: later pieces are dropped, so a list shows its
 * first entries and then "…", never a later entry after a hole.
 *
 * The UTF-8 rules are the strict ones (RFC 3629): no overlong forms, no
 * surrogates, nothing past U+10FFFF.  json.c refuses documents that break
 * them, rpc.c refuses such strings in requests, and the QMP and QGA
 * channels repair them (text_utf8_sanitize()): one decoder for all.
 */
#include "text.h"

#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CUT_LEN (sizeof(TEXT_CUT_MARK) - 1)

/* The length of the valid sequence at @s[0..@len), or 0 when it is not
 * one, with *ret_bad (when not NULL) the offset of the byte that breaks
 * it: a missing continuation byte, else the lead byte. */
static size_t utf8_seq(const unsigned char *s, size_t len, size_t *ret_bad) {
        unsigned c = s[0], need, cp;
        if (ret_bad)
                *ret_bad = 0;
        if (c < 0x80)
                return 1;
        if (c >= 0xc2 && c <= 0xdf)
                need = 1, cp = c & 0x1f;
        else if (c >= 0xe0 && c <= 0xef)
                need = 2, cp = c & 0x0f;
        else if (c >= 0xf0 && c <= 0xf4)
                need = 3, cp = c & 0x07;
        else
                return 0;
        for (unsigned k = 1; k <= need; k++) {
                if (k >= len || (s[k] & 0xc0) != 0x80) {
                        if (ret_bad)
                                *ret_bad = k;
                        return 0;
                }
                cp = cp << 6 | (s[k] & 0x3f);
        }
        if ((need == 2 && cp < 0x800) || (need == 3 && (cp < 0x10000 || cp > 0x10ffff)) ||
            (cp >= 0xd800 && cp < 0xe000))
                return 0;
        return need + 1;
}

size_t text_utf8_invalid_at(const char *text, size_t len) {
        const unsigned char *s = (const unsigned char *) text;
        for (size_t i = 0; i < len;) {
                size_t bad, n = utf8_seq(s + i, len - i, &bad);
                if (n == 0)
                        return i + bad < len ? i + bad : i; /* cut at the end: where it starts */
                i += n;
        }
        return len;
}

bool text_utf8_valid(const char *s) {
        size_t len = strlen(s);
        return text_utf8_invalid_at(s, len) == len;
}

int text_utf8_sanitize(const char *text, size_t len, char **ret, size_t *ret_len) {
        const unsigned char *s = (const unsigned char *) text;
        size_t bad = 0, n = 0;
        int replaced = 0;
        char *out;

        *ret = NULL;
        while (bad < len) {
                size_t k = utf8_seq(s + bad, len - bad, NULL);
                if (k == 0)
                        break;
                bad += k;
        }
        if (bad == len)
                return 0;
        /* each invalid byte becomes at most 3 bytes */
        if (len > (SIZE_MAX - 1) / 3 || !(out = malloc(len * 3 + 1)))
                return -ENOMEM;
        memcpy(out, text, bad);
        n = bad;
        for (size_t i = bad; i < len;) {
                size_t k = utf8_seq(s + i, len - i, NULL);
                if (k > 0) {
                        memcpy(out + n, s + i, k);
                        n += k;
                        i += k;
                        continue;
                }
                /* one U+FFFD for the lead byte and the continuation bytes after it */
                i++;
                while (i < len && (s[i] & 0xc0) == 0x80)
                        i++;
                memcpy(out + n, "\xef\xbf\xbd", 3);
                n += 3;
                replaced++;
        }
        out[n] = '\0';
        *ret = out;
        *ret_len = n;
        return replaced;
}

size_t text_utf8_trim(char *s) {
        size_t len = strlen(s), start = len;
        /* back to the last lead byte (at most 3 continuation bytes) */
        while (start > 0 && len - start < 4 && ((unsigned char) s[start - 1] & 0xc0) == 0x80)
                start--;
        if (start == 0 || ((unsigned char) s[start - 1] & 0xc0) != 0xc0)
                return len; /* ASCII or stray continuation bytes: nothing cut here */
        start--;
        if (utf8_seq((const unsigned char *) s + start, len - start, NULL) == 0)
                s[len = start] = '\0';
        return len;
}

/* Cut the string in @buf[@size] so it ends with the mark. */
static size_t mark_cut(char *buf, size_t size, size_t len) {
        if (len > size - 1 - CUT_LEN)
                len = size - 1 - CUT_LEN;
        buf[len] = '\0';
        len = text_utf8_trim(buf);
        memcpy(buf + len, TEXT_CUT_MARK, CUT_LEN + 1);
        return len + CUT_LEN;
}

/* The string of @len bytes in @buf[@size] was cut: it ends with the mark
 * within a character's length of the end. */
static bool is_cut(const char *buf, size_t size, size_t len) {
        return len >= CUT_LEN && len + 4 >= size - 1 && memcmp(buf + len - CUT_LEN, TEXT_CUT_MARK, CUT_LEN) == 0;
}

size_t text_vappend(char *buf, size_t size, size_t len, const char *fmt, va_list ap) {
        int n;

        if (len >= size) {
                len = strnlen(buf, size - 1);
                buf[len] = '\0';
                return is_cut(buf, size, len) ? len : mark_cut(buf, size, len);
        }
        if (is_cut(buf, size, len))
                return len;
        n = vsnprintf(buf + len, size - len, fmt, ap);
        if (n < 0) {
                buf[len] = '\0';
                return len;
        }
        if ((size_t) n < size - len)
                return len + (size_t) n;
        return mark_cut(buf, size, size - 1);
}

size_t text_append(char *buf, size_t size, size_t len, const char *fmt, ...) {
        va_list ap;
        va_start(ap, fmt);
        len = text_vappend(buf, size, len, fmt, ap);
        va_end(ap);
        return len;
}

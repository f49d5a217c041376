/* Bounded text: appending to fixed buffers, UTF-8 checks and repairs, and
 * the rule for identifiers that clients choose (operation and job ids).
 *
 * Fixed buffers are filled in loops all over the code (a line per guest, a
 * list of holders, the causes of a failure).  snprintf() returns the length
 * the text would have had, so `len += snprintf(buf + len, size - len, ...)`
 * runs past the end once one piece does not fit (size - len underflows).
 * text_append() is the one way to do it: it never writes past @size, cuts
 * at a UTF-8 character boundary, and marks a cut with "…".
 *
 * Text that reaches a protobuf string must be valid UTF-8 (protobuf-c packs
 * anything; grpcio and most other clients refuse to decode the message).
 * Guest and QEMU input is repaired at the channel boundary with
 * text_utf8_sanitize() (invalid sequences become U+FFFD), and a text cut to
 * fit a buffer is cut at a character boundary (text_utf8_trim()).
 *
 * Nothing here allocates except text_utf8_sanitize(), nothing sets the
 * error slot (err.c itself uses this file), and every function is safe on
 * any thread.
 */
#pragma once

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>

#include "cleanup.h"

/* What a cut text ends with (U+2026, 3 bytes). */
#define TEXT_CUT_MARK "\xe2\x80\xa6"

/* Append printf-style text to the NUL-terminated string of length @len in
 * @buf[@size] (@size >= 4).  Returns the new length, always < @size.  When
 * the text does not fit, the string is cut at a UTF-8 character boundary
 * and ends with TEXT_CUT_MARK; later appends leave it so.  A @len >= @size
 * (from a caller's own snprintf) is read as a full buffer. */
size_t text_append(char *buf, size_t size, size_t len, const char *fmt, ...) _printf_(4, 5);
/* The same with a va_list. */
size_t text_vappend(char *buf, size_t size, size_t len, const char *fmt, va_list ap) _printf_(4, 0);

/* Offset of the first byte of @s[0..@len) that is not part of valid UTF-8
 * (no overlong forms, no surrogates, nothing past U+10FFFF), or @len. */
size_t text_utf8_invalid_at(const char *s, size_t len);

/* Whether the NUL-terminated @s is valid UTF-8 (as above). */
bool text_utf8_valid(const char *s);

/* Repair @s[0..@len): every invalid sequence becomes U+FFFD.  Returns the
 * number of sequences replaced: 0 with *ret NULL (the text is valid as it
 * is), > 0 with *ret a malloc'ed NUL-terminated copy of *ret_len bytes, or
 * -ENOMEM.  NUL bytes are kept (they are valid UTF-8). */
int text_utf8_sanitize(const char *s, size_t len, char **ret, size_t *ret_len);

/* Shorten the NUL-terminated @s by the bytes of a character cut at its end
 * (a lead byte without all its continuation bytes), so a text truncated by
 * snprintf() stays valid UTF-8.  Returns the new length. */
size_t text_utf8_trim(char *s);

/* Errors: -errno return codes plus a thread-local detail message.
 *
 * Functions that can fail return 0 (or a count) on success and -errno on
 * failure.  The human-readable detail travels beside the code in a
 * thread-local slot, set with err_set():
 *
 *     return err_set(-EPROTO, "QMP reply id %s unknown", id);
 *
 * The detail belongs to the thread; code that hands an error to another
 * thread (a job result, an RPC status) copies it out with err_take().
 */
#pragma once

#include <stdarg.h>
#include "cleanup.h"

#define ERR_MSG_MAX 512

/* Record @errnum (negative errno) and a printf-style detail; returns @errnum
 * so it can be used in a return statement.  A positive @errnum is negated. */
int err_set(int errnum, const char *fmt, ...) _printf_(2, 3);
int err_setv(int errnum, const char *fmt, va_list ap) _printf_(2, 0);

/* Prefix the current detail with more context: "ctx: old detail".  Returns
 * @errnum unchanged.  If no detail is set, strerror(-errnum) is used. */
int err_prefix(int errnum, const char *fmt, ...) _printf_(2, 3);

/* The current detail, or "" when none.  Valid until the next err_* call. */
const char *err_msg(void);

/* The detail if set, else strerror(-errnum).  Never NULL. */
const char *err_str(int errnum);

/* A malloc'ed copy of the detail (strerror fallback) for another thread; the
 * slot is cleared.  Returns NULL only when out of memory. */
char *err_take(int errnum);

void err_clear(void);

/* Thread-local error detail (see err.h).  A detail cut to fit
 * ERR_MSG_MAX is cut at a UTF-8 character boundary: details carry guest
 * and QEMU text into protobuf strings, which must stay valid UTF-8. */
#include "err.h"

#include <stdio.h>
#include <string.h>

#include "text.h"

static _Thread_local char err_buf[ERR_MSG_MAX];
static _Thread_local char err_tmp[ERR_MSG_MAX];

int err_setv(int errnum, const char *fmt, va_list ap) {
        char buf[sizeof(err_buf)];
        if (errnum > 0)
                errnum = -errnum;
        /* through a copy: an argument may be err_str()'s own buffer */
        if (vsnprintf(buf, sizeof(buf), fmt, ap) >= (int) sizeof(buf))
                (void) text_utf8_trim(buf);
        memcpy(err_buf, buf, sizeof(buf));
        return errnum;
}

int err_set(int errnum, const char *fmt, ...) {
        va_list ap;
        va_start(ap, fmt);
        errnum = err_setv(errnum, fmt, ap);
        va_end(ap);
        return errnum;
}

int err_prefix(int errnum, const char *fmt, ...) {
        char ctx[ERR_MSG_MAX];
        va_list ap;

        if (errnum > 0)
                errnum = -errnum;
        va_start(ap, fmt);
        vsnprintf(ctx, sizeof(ctx), fmt, ap);
        va_end(ap);
        snprintf(err_tmp, sizeof(err_tmp), "%s", err_buf[0] ? err_buf : strerror(-errnum));
        /* ctx then the old detail, each cut to fit */
        size_t n = strnlen(ctx, sizeof(err_buf) - 3);
        ctx[n] = '\0';
        n = text_utf8_trim(ctx);
        memcpy(err_buf, ctx, n);
        memcpy(err_buf + n, ": ", 2);
        size_t rest = sizeof(err_buf) - n - 3;
        size_t m = strnlen(err_tmp, rest);
        memcpy(err_buf + n + 2, err_tmp, m);
        err_buf[n + 2 + m] = '\0';
        (void) text_utf8_trim(err_buf);
        return errnum;
}

const char *err_msg(void) {
        return err_buf;
}

const char *err_str(int errnum) {
        if (err_buf[0])
                return err_buf;
        return strerror(errnum < 0 ? -errnum : errnum);
}

char *err_take(int errnum) {
        char *s = strdup(err_str(errnum));
        err_buf[0] = '\0';
        return s;
}

void err_clear(void) {
        err_buf[0] = '\0';
}

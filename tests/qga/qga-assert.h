/* Assertions shared by the QGA tests: a return code together with the
 * thread-local error detail, so a failure shows what the channel said. */
#pragma once

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "err.h"

#define assert_rc(expr, want)                                                                  \
        do {                                                                                   \
                int r_ = (expr);                                                               \
                if (r_ != (want))                                                              \
                        print_error("%s returned %d (%s), expected %d\n", #expr, r_, err_msg(), \
                                    (int) (want));                                             \
                assert_int_equal(r_, (want));                                                  \
        } while (0)

#define assert_detail_has(needle)                                                         \
        do {                                                                              \
                if (!strstr(err_msg(), (needle)))                                         \
                        print_error("error detail \"%s\" lacks \"%s\"\n", err_msg(), (needle)); \
                assert_non_null(strstr(err_msg(), (needle)));                             \
        } while (0)

/* Unit tests of the source's plan for local disks (agent-migrate-storage.c,
 * docs/migration.md "Local disks"): which disks are copied, the virtual
 * sizes read from the images (a raw file's length, a qcow2 header's size
 * field), and what refuses a migration before anything starts. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "agent-migrate-priv.h"
#include "err.h"
#include "testutil.h"

static char dir[128];

static void write_file(const char *name, const void *data, size_t len, off_t size) {
        char p[320];
        snprintf(p, sizeof(p), "%s/%s", dir, name);
        int fd = open(p, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        assert_true(fd >= 0);
        if (len)
                assert_int_equal(write(fd, data, len), (ssize_t) len);
        assert_int_equal(ftruncate(fd, size), 0);
        close(fd);
}

/* A qcow2 header (version 3) saying @virtual_size. */
static void write_qcow2(const char *name, uint64_t virtual_size) {
        uint8_t h[104] = { 'Q', 'F', 'I', 0xfb, 0, 0, 0, 3 };
        for (int i = 0; i < 8; i++)
                h[24 + i] = (uint8_t) (virtual_size >> (56 - 8 * i));
        write_file(name, h, sizeof(h), 65536);
}

static void disk(GuestDef *d, const char *name, const char *format, bool local, bool readonly) {
        GuestDisk *k = &d->disks[d->n_disks++];
        memset(k, 0, sizeof(*k));
        snprintf(k->path, sizeof(k->path), "%s/%.100s", dir, name);
        snprintf(k->format, sizeof(k->format), "%s", format);
        snprintf(k->cache, sizeof(k->cache), "writeback");
        k->local = local;
        k->readonly = readonly;
}

static MigParams params(MigTransport t) {
        MigParams p = { 0 };
        p.transport = t;
        p.postcopy = POSTCOPY_POLICY_NEVER;
        return p;
}

/* Only the local disks are copied, each with its own size and format. */
static void test_plan_lists_local_disks(void **state) {
        GuestDef d = { 0 };
        MigStorage st;
        MigParams p = params(MIG_TRANSPORT_TLS);
        write_file("a.raw", "x", 1, 8 << 20);
        write_qcow2("b.qcow2", 3ull << 30);
        write_file("shared.raw", NULL, 0, 1 << 20);
        disk(&d, "shared.raw", "raw", false, false);
        disk(&d, "a.raw", "raw", true, false);
        disk(&d, "b.qcow2", "qcow2", true, false);
        assert_int_equal(mig_storage_plan(&d, &p, &st), 0);
        assert_int_equal(st.n, 2);
        assert_int_equal(st.disks[0].index, 1);
        assert_int_equal(st.disks[0].virtual_size, 8 << 20);
        assert_string_equal(st.disks[0].format, "raw");
        assert_int_equal(st.disks[1].index, 2);
        assert_int_equal(st.disks[1].virtual_size, 3ull << 30); /* the header's, not the file's 64 KiB */
        assert_string_equal(st.disks[1].format, "qcow2");
        assert_int_equal(mig_storage_bytes(&st), (8ull << 20) + (3ull << 30));
        assert_int_equal(mig_storage_local_bytes(&d), (8ull << 20) + (3ull << 30));
}

/* No local disk: nothing to copy, whatever the transport. */
static void test_plan_without_local_disks(void **state) {
        GuestDef d = { 0 };
        MigStorage st;
        MigParams p = params(MIG_TRANSPORT_SSH);
        p.postcopy = POSTCOPY_POLICY_ALLOWED;
        write_file("s.raw", NULL, 0, 1 << 20);
        disk(&d, "s.raw", "raw", false, true);
        assert_int_equal(mig_storage_plan(&d, &p, &st), 0);
        assert_int_equal(st.n, 0);
        assert_int_equal(mig_storage_local_bytes(&d), 0);
}

/* What refuses a migration at begin, each with its reason. */
static void test_plan_refusals(void **state) {
        GuestDef d = { 0 };
        MigStorage st;
        MigParams p = params(MIG_TRANSPORT_TLS);
        write_file("r.raw", NULL, 0, 1 << 20);
        disk(&d, "r.raw", "raw", true, true);
        assert_int_equal(mig_storage_plan(&d, &p, &st), -EOPNOTSUPP);
        assert_non_null(strstr(err_msg(), "local and readonly"));

        d.disks[0].readonly = false;
        p = params(MIG_TRANSPORT_SSH);
        assert_int_equal(mig_storage_plan(&d, &p, &st), -EOPNOTSUPP);
        assert_non_null(strstr(err_msg(), "SSH"));

        p = params(MIG_TRANSPORT_TLS);
        p.postcopy = POSTCOPY_POLICY_ALLOWED;
        assert_int_equal(mig_storage_plan(&d, &p, &st), -EOPNOTSUPP);
        assert_non_null(strstr(err_msg(), "post-copy"));

        /* an image that is not what the definition says, or is missing */
        GuestDef q = { 0 };
        write_file("not.qcow2", "raw bytes", 9, 1 << 20);
        disk(&q, "not.qcow2", "qcow2", true, false);
        p = params(MIG_TRANSPORT_TLS);
        assert_int_equal(mig_storage_plan(&q, &p, &st), -EINVAL);
        assert_non_null(strstr(err_msg(), "not a qcow2 image"));
        GuestDef m = { 0 };
        disk(&m, "missing.raw", "raw", true, false);
        assert_int_equal(mig_storage_plan(&m, &p, &st), -ENOENT);
        assert_non_null(strstr(err_msg(), "disks[0]"));
}

int main(void) {
        snprintf(dir, sizeof(dir), "%s", tu_tmpdir("storage"));
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_plan_lists_local_disks),
                cmocka_unit_test(test_plan_without_local_disks),
                cmocka_unit_test(test_plan_refusals),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}

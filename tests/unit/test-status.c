/* Unit tests for status files: round trip, atomic replacement, and bad
 * files (corrupt, truncated, unknown version, wrong types) that are
 * quarantined with a clear reason while the other VMs load. */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <cmocka.h>

#include "err.h"
#include "status.h"
#include "vm.h"
#include "testutil.h"

static void fill_record(VmStatusRecord *rec, const char *name) {
        memset(rec, 0, sizeof(*rec));
        snprintf(rec->name, sizeof(rec->name), "%s", name);
        vm_uuid_generate(rec->uuid);
        rec->definition_json = strdup("{\"memory_mib\": 64, \"vcpus\": 1}");
        rec->state = VM_STATE_PAUSED;
        rec->reason = VM_REASON_MIGRATION;
        rec->pid = getpid();
        rec->pid_start_time = status_pid_start_time(getpid());
        snprintf(rec->qmp_path, sizeof(rec->qmp_path), "/run/drover/%s.qmp", name);
        snprintf(rec->qga_path, sizeof(rec->qga_path), "/run/drover/%s.qga", name);
        rec->async_job = ASYNC_JOB_MIGRATION_OUT;
        rec->phase = JOB_PHASE_PERFORM;
        snprintf(rec->op_id, sizeof(rec->op_id), "op-%s", name);
        snprintf(rec->mig.peer, sizeof(rec->mig.peer), "10.77.0.2:7000");
        snprintf(rec->mig.op, sizeof(rec->mig.op), "mig-op-%s", name);
        snprintf(rec->mig.caller, sizeof(rec->mig.caller), "CN=hv2,O=Example \"Q\"");
        rec->mig.created_by_prepare = true;
        snprintf(rec->mig.uri, sizeof(rec->mig.uri), "tcp:10.77.0.2:49152");
        rec->mig.has_orig_params = true;
        rec->mig.orig_params.has_max_bandwidth = true;
        rec->mig.orig_params.max_bandwidth = 134217728;
        rec->mig.orig_params.has_downtime_limit = true;
        rec->mig.orig_params.downtime_limit = 300;
        rec->mig.orig_params.has_tls_creds = true;
        rec->mig.orig_caps = MIGRATION_CAP_BIT(MIGRATION_CAP_EVENTS);
        rec->mig.postcopy_started = true;
        rec->extra_json = strdup("{\"note\": \"x\"}");
}

static void test_round_trip(void **state) {
        const char *dir = tu_tmpdir("status-rt");
        VmStatusRecord a, b;
        fill_record(&a, "web1");
        assert_int_equal(status_write(dir, &a), 0);
        assert_int_equal(status_read(tu_path(dir, "web1.json"), &b), 0);
        assert_string_equal(a.name, b.name);
        assert_string_equal(a.uuid, b.uuid);
        assert_int_equal(b.state, VM_STATE_PAUSED);
        assert_int_equal(b.reason, VM_REASON_MIGRATION);
        assert_int_equal(b.pid, getpid());
        assert_true(b.pid_start_time > 0);
        assert_int_equal(a.pid_start_time, b.pid_start_time);
        assert_string_equal(a.qmp_path, b.qmp_path);
        assert_string_equal(a.qga_path, b.qga_path);
        assert_int_equal(b.async_job, ASYNC_JOB_MIGRATION_OUT);
        assert_int_equal(b.phase, JOB_PHASE_PERFORM);
        assert_string_equal(b.op_id, "op-web1");
        assert_string_equal(b.mig.peer, "10.77.0.2:7000");
        assert_string_equal(b.mig.op, "mig-op-web1");
        assert_string_equal(b.mig.caller, "CN=hv2,O=Example \"Q\"");
        assert_true(b.mig.created_by_prepare);
        assert_string_equal(b.mig.uri, "tcp:10.77.0.2:49152");
        assert_true(b.mig.has_orig_params);
        assert_true(b.mig.orig_params.has_max_bandwidth);
        assert_int_equal(b.mig.orig_params.max_bandwidth, 134217728);
        assert_int_equal(b.mig.orig_params.downtime_limit, 300);
        assert_true(b.mig.orig_params.has_tls_creds);
        assert_string_equal(b.mig.orig_params.tls_creds, "");
        assert_false(b.mig.orig_params.has_multifd_channels);
        assert_int_equal(b.mig.orig_caps, MIGRATION_CAP_BIT(MIGRATION_CAP_EVENTS));
        assert_true(b.mig.postcopy_started);
        assert_non_null(strstr(b.definition_json, "\"memory_mib\":64"));
        assert_non_null(strstr(b.extra_json, "\"note\":\"x\""));
        status_record_clear(&a);
        status_record_clear(&b);

        /* the file is replaced atomically: no temporary files are left and
         * the mode is private */
        DIR *d = opendir(dir);
        struct dirent *de;
        int files = 0;
        while ((de = readdir(d)))
                if (de->d_name[0] != '.' || strncmp(de->d_name, ".web1", 5) == 0)
                        files++;
        closedir(d);
        assert_int_equal(files, 1);
        struct stat st;
        assert_int_equal(stat(tu_path(dir, "web1.json"), &st), 0);
        assert_int_equal(st.st_mode & 0777, 0600);

        assert_int_equal(status_remove(dir, "web1"), 0);
        assert_int_equal(access(tu_path(dir, "web1.json"), F_OK), -1);
        assert_int_equal(status_remove(dir, "web1"), 0); /* already gone is fine */
}

static void write_file(const char *path, const char *content) {
        FILE *f = fopen(path, "w");
        assert_non_null(f);
        fputs(content, f);
        fclose(f);
}

typedef struct Loaded {
        int good;
        int bad;
        char names[8][VM_NAME_MAX];
        char bad_files[8][64];
        char bad_details[8][512];
} Loaded;

static void on_good(VmStatusRecord *rec, void *opaque) {
        Loaded *l = opaque;
        snprintf(l->names[l->good++ % 8], VM_NAME_MAX, "%s", rec->name);
}

static void on_bad(const char *file, const char *quarantined, int error, const char *detail,
                   const char *quarantine_error, void *opaque) {
        Loaded *l = opaque;
        (void) error;
        assert_string_equal(quarantine_error, "");
        assert_non_null(strstr(quarantined, "/quarantine/"));
        assert_non_null(strstr(quarantined, file));
        snprintf(l->bad_files[l->bad % 8], 64, "%s", file);
        snprintf(l->bad_details[l->bad % 8], 512, "%s", detail);
        l->bad++;
}

static const char *detail_for(Loaded *l, const char *file) {
        for (int i = 0; i < l->bad && i < 8; i++)
                if (strcmp(l->bad_files[i], file) == 0)
                        return l->bad_details[i];
        return NULL;
}

static void test_bad_files_quarantined_others_load(void **state) {
        const char *dir = tu_tmpdir("status-bad");
        VmStatusRecord a;
        Loaded l = { 0 };
        char *good_json;

        fill_record(&a, "good");
        assert_int_equal(status_write(dir, &a), 0);
        assert_int_equal(status_record_to_json(&a, &good_json), 0);
        status_record_clear(&a);

        write_file(tu_path(dir, "garbage.json"), "{\"format\": \"drover-vm-status\", \"version\": 1, \"name\": ");
        write_file(tu_path(dir, "future.json"),
                   "{\"format\": \"drover-vm-status\", \"version\": 99, \"name\": \"future\"}");
        write_file(tu_path(dir, "alien.json"), "{\"format\": \"something-else\", \"version\": 1}");
        write_file(tu_path(dir, "badtype.json"),
                   "{\"format\": \"drover-vm-status\", \"version\": 1, \"name\": \"badtype\", "
                   "\"uuid\": \"11111111-2222-3333-4444-555555555555\", \"state\": \"running\", "
                   "\"reason\": \"booted\", \"pid\": \"123\"}");
        write_file(tu_path(dir, "badstate.json"),
                   "{\"format\": \"drover-vm-status\", \"version\": 1, \"name\": \"badstate\", "
                   "\"uuid\": \"11111111-2222-3333-4444-555555555555\", \"state\": \"flying\", "
                   "\"reason\": \"booted\", \"pid\": 0}");
        /* a record whose name does not match its file */
        char *renamed = strdup(good_json);
        write_file(tu_path(dir, "impostor.json"), renamed);
        free(renamed);
        write_file(tu_path(dir, "empty.json"), "");
        write_file(tu_path(dir, "notes.txt"), "not a status file");

        int n = status_load_all(dir, on_good, on_bad, &l);
        assert_int_equal(n, 1);
        assert_int_equal(l.good, 1);
        assert_string_equal(l.names[0], "good");
        assert_int_equal(l.bad, 7);

        assert_non_null(strstr(detail_for(&l, "garbage.json"), "status file: truncated JSON"));
        assert_non_null(strstr(detail_for(&l, "future.json"), "version 99 is not supported"));
        assert_non_null(strstr(detail_for(&l, "alien.json"), "format 'something-else'"));
        assert_non_null(strstr(detail_for(&l, "badtype.json"), "status file: 'pid' must be an integer, not a string"));
        assert_non_null(strstr(detail_for(&l, "badstate.json"), "'state' has unknown value 'flying'"));
        assert_non_null(strstr(detail_for(&l, "impostor.json"), "does not match the file name"));
        assert_non_null(detail_for(&l, "empty.json"));

        /* bad files moved to quarantine/ with a reason note; good ones stay */
        assert_int_equal(access(tu_path(dir, "garbage.json"), F_OK), -1);
        assert_int_equal(access(tu_path(dir, "good.json"), F_OK), 0);
        assert_int_equal(access(tu_path(dir, "notes.txt"), F_OK), 0);
        DIR *d = opendir(tu_path(dir, "quarantine"));
        assert_non_null(d);
        struct dirent *de;
        int files = 0, notes = 0;
        while ((de = readdir(d))) {
                if (de->d_name[0] == '.')
                        continue;
                if (strstr(de->d_name, ".reason"))
                        notes++;
                else
                        files++;
        }
        closedir(d);
        assert_int_equal(files, 7);
        assert_int_equal(notes, 7);

        /* a second load sees only the good one and nothing bad */
        Loaded l2 = { 0 };
        assert_int_equal(status_load_all(dir, on_good, on_bad, &l2), 1);
        assert_int_equal(l2.bad, 0);
        free(good_json);
}

/* The note beside a quarantined file (<dir>/quarantine/<file>.<ns>.reason). */
static char *note_of(const char *dir, const char *file) {
        char prefix[128];
        snprintf(prefix, sizeof(prefix), "%s.", file);
        DIR *d = opendir(tu_path(dir, "quarantine"));
        struct dirent *de;
        char *note = NULL;
        assert_non_null(d);
        while (!note && (de = readdir(d))) {
                size_t n = strlen(de->d_name);
                if (strncmp(de->d_name, prefix, strlen(prefix)) == 0 && n > 7 &&
                    strcmp(de->d_name + n - 7, ".reason") == 0)
                        note = tu_read_file(tu_path(tu_path(dir, "quarantine"), de->d_name), NULL);
        }
        closedir(d);
        return note;
}

/* A note gives its own file and its own error, never an error left over
 * from another file or an earlier call on the thread. */
static void test_quarantine_note_names_its_own_file_and_error(void **state) {
        const char *dir = tu_tmpdir("status-notes");
        struct { const char *file, *content, *error; } bad[] = {
                { "empty.json", "", "status file" },
                { "cut.json", "{\"format\": \"drover-vm-status\", \"version\": 1, \"na", "truncated JSON" },
                { "newer.json", "{\"format\": \"drover-vm-status\", \"version\": 7, \"name\": \"newer\"}",
                  "version 7 is not supported" },
                { "binary.json", "\x01\x02\x03", "status file" },
        };
        for (size_t i = 0; i < ELEMENTSOF(bad); i++)
                write_file(tu_path(dir, bad[i].file), bad[i].content);
        err_set(-EIO, "a stale error of stale.json");
        Loaded l = { 0 };
        assert_int_equal(status_load_all(dir, on_good, on_bad, &l), 0);
        assert_int_equal(l.bad, (int) ELEMENTSOF(bad));
        for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
                char *note = note_of(dir, bad[i].file);
                char own[128];
                snprintf(own, sizeof(own), "%s/%s", dir, bad[i].file);
                assert_non_null(note);
                if (!strstr(note, own) || !strstr(note, bad[i].error) || strstr(note, "stale"))
                        fail_msg("note of %s: '%s'", bad[i].file, note);
                for (size_t j = 0; j < ELEMENTSOF(bad); j++)
                        if (j != i && strstr(note, bad[j].file))
                                fail_msg("note of %s names %s: '%s'", bad[i].file, bad[j].file, note);
                const char *detail = detail_for(&l, bad[i].file);
                assert_non_null(detail);
                assert_non_null(strstr(note, detail));
                free(note);
        }
}

/* The same with the files the start must not trust to be files: a FIFO, a
 * symbolic link, a folder, a NUL byte inside valid JSON, one too large, and
 * a record of another guest, side by side in one folder with a good file,
 * behind a stale error on the thread. */
static void test_quarantine_notes_of_special_files_are_their_own(void **state) {
        const char *dir = tu_tmpdir("status-special-notes");
        struct { const char *file, *error; } bad[] = {
                { "fifo.json", "is a FIFO (named pipe), not a regular file" },
                { "link.json", "is a symbolic link" },
                { "folder.json", "is a folder, not a regular file" },
                { "nul.json", "status file" },
                { "huge.json", "more than" },
                { "other.json", "records VM 'good', which does not match the file name" },
        };
        VmStatusRecord a;
        char *good_json;
        fill_record(&a, "good");
        assert_int_equal(status_write(dir, &a), 0);
        assert_int_equal(status_record_to_json(&a, &good_json), 0);
        status_record_clear(&a);
        assert_int_equal(mkfifo(tu_path(dir, "fifo.json"), 0600), 0);
        assert_int_equal(symlink(tu_path(dir, "good.json"), tu_path(dir, "link.json")), 0);
        assert_int_equal(mkdir(tu_path(dir, "folder.json"), 0700), 0);
        FILE *f = fopen(tu_path(dir, "nul.json"), "w");
        assert_non_null(f);
        static const char nul[] = "{\"format\": \"drover-vm-status\"\0, \"version\": 1}";
        assert_int_equal(fwrite(nul, 1, sizeof(nul) - 1, f), sizeof(nul) - 1);
        fclose(f);
        f = fopen(tu_path(dir, "huge.json"), "w");
        assert_non_null(f);
        for (unsigned i = 0; i < STATUS_FILE_MAX + 8; i++)
                fputc(' ', f);
        fclose(f);
        write_file(tu_path(dir, "other.json"), good_json);
        free(good_json);

        err_set(-EIO, "a stale error of stale.json");
        Loaded l = { 0 };
        alarm(10); /* a FIFO opened for reading without O_NONBLOCK would wait for ever */
        assert_int_equal(status_load_all(dir, on_good, on_bad, &l), 1);
        alarm(0);
        assert_int_equal(l.bad, (int) ELEMENTSOF(bad));
        for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
                char *note = note_of(dir, bad[i].file);
                char own[256];
                snprintf(own, sizeof(own), "%s/%s", dir, bad[i].file);
                if (!note)
                        fail_msg("no note for %s", bad[i].file);
                if (!strstr(note, own) || !strstr(note, bad[i].error) || strstr(note, "stale"))
                        fail_msg("note of %s: '%s'", bad[i].file, note);
                for (size_t j = 0; j < ELEMENTSOF(bad); j++)
                        if (j != i && strstr(note, bad[j].file))
                                fail_msg("note of %s names %s: '%s'", bad[i].file, bad[j].file, note);
                const char *detail = detail_for(&l, bad[i].file);
                assert_non_null(detail);
                assert_non_null(strstr(note, detail));
                free(note);
        }
        assert_int_equal(access(tu_path(dir, "good.json"), F_OK), 0); /* the link's target stays */
}

static void test_parse_errors_are_clear(void **state) {
        VmStatusRecord rec;
        const char *trailing = "{\"format\": \"drover-vm-status\", \"version\": 1} x";
        assert_int_equal(status_record_from_json(trailing, strlen(trailing), &rec), -EBADMSG);
        assert_string_equal(err_msg(), "status file: invalid JSON at line 1, column 46: trailing data after the JSON value");
        const char *arr = "[1, 2]";
        assert_int_equal(status_record_from_json(arr, strlen(arr), &rec), -EBADMSG);
        assert_string_equal(err_msg(), "status file: must be a JSON object, not an array");
        const char *noop = "{\"format\": \"drover-vm-status\", \"version\": 1, \"name\": \"a\", "
                           "\"uuid\": \"11111111-2222-3333-4444-555555555555\", \"state\": \"running\", "
                           "\"reason\": \"booted\", \"pid\": 5, "
                           "\"job\": {\"async\": \"migration-out\", \"phase\": \"perform\", \"op\": \"\"}}";
        assert_int_equal(status_record_from_json(noop, strlen(noop), &rec), -EINVAL);
        assert_non_null(strstr(err_msg(), "without an operation id"));
        const char *badphase = "{\"format\": \"drover-vm-status\", \"version\": 1, \"name\": \"a\", "
                               "\"uuid\": \"11111111-2222-3333-4444-555555555555\", \"state\": \"running\", "
                               "\"reason\": \"booted\", \"pid\": 5, "
                               "\"job\": {\"async\": \"migration-out\", \"phase\": \"warp\", \"op\": \"x\"}}";
        assert_int_equal(status_record_from_json(badphase, strlen(badphase), &rec), -EINVAL);
        assert_string_equal(err_msg(), "status file: 'job.phase' has unknown value 'warp'");
        const char *badname = "{\"format\": \"drover-vm-status\", \"version\": 1, \"name\": \"../etc\", "
                              "\"uuid\": \"11111111-2222-3333-4444-555555555555\", \"state\": \"running\", "
                              "\"reason\": \"booted\", \"pid\": 5}";
        assert_int_equal(status_record_from_json(badname, strlen(badname), &rec), -EINVAL);
        assert_non_null(strstr(err_msg(), "invalid VM name"));
        const char *negpid = "{\"format\": \"drover-vm-status\", \"version\": 1, \"name\": \"a\", "
                             "\"uuid\": \"11111111-2222-3333-4444-555555555555\", \"state\": \"running\", "
                             "\"reason\": \"booted\", \"pid\": -5}";
        assert_int_equal(status_record_from_json(negpid, strlen(negpid), &rec), -EINVAL);
        assert_string_equal(err_msg(), "status file: 'pid' must be between 0 and 2147483647, not -5");
        const char *longstr = "{\"format\": \"drover-vm-status\", \"version\": 1, \"name\": \"a\", "
                              "\"uuid\": \"11111111-2222-3333-4444-555555555555\", \"state\": \"running\", "
                              "\"reason\": \"booted\", \"pid\": 5, \"migration\": {\"peer\": "
                              "\"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
                              "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
                              "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\"}}";
        assert_int_equal(status_record_from_json(longstr, strlen(longstr), &rec), -EINVAL);
        assert_string_equal(err_msg(), "status file: 'migration.peer' is too long (272 bytes, at most 255)");
}

static void test_oversized_and_special_files(void **state) {
        const char *dir = tu_tmpdir("status-big");
        VmStatusRecord rec;
        char *big = malloc(STATUS_FILE_MAX + 16);
        memset(big, ' ', STATUS_FILE_MAX + 15);
        big[STATUS_FILE_MAX + 15] = '\0';
        write_file(tu_path(dir, "big.json"), big);
        free(big);
        assert_int_equal(status_read(tu_path(dir, "big.json"), &rec), -EFBIG);
        assert_int_equal(mkdir(tu_path(dir, "dir.json"), 0700), 0);
        assert_true(status_read(tu_path(dir, "dir.json"), &rec) < 0);
        assert_int_equal(symlink("/etc/passwd", tu_path(dir, "link.json")), 0);
        assert_true(status_read(tu_path(dir, "link.json"), &rec) < 0); /* O_NOFOLLOW */
        assert_non_null(strstr(err_msg(), "is a symbolic link"));
        /* a FIFO is refused at once, never waited on (no writer ever comes) */
        assert_int_equal(mkfifo(tu_path(dir, "fifo.json"), 0600), 0);
        alarm(10);
        assert_int_equal(status_read(tu_path(dir, "fifo.json"), &rec), -EBADMSG);
        alarm(0);
        assert_non_null(strstr(err_msg(), "is a FIFO (named pipe), not a regular file"));
        assert_int_equal(status_read(tu_path(dir, "missing.json"), &rec), -ENOENT);
        assert_non_null(strstr(err_msg(), "cannot open status file"));
        /* a missing folder reads as empty */
        assert_int_equal(status_load_all(tu_path(dir, "nope"), NULL, NULL, NULL), 0);
}

/* A record written before "caller" existed loads, with no caller: the
 * member is optional. */
static void test_record_without_caller_loads(void **state) {
        const char *dir = tu_tmpdir("status-nocaller");
        VmStatusRecord a, b;
        fill_record(&a, "old1");
        a.mig.caller[0] = '\0';
        assert_int_equal(status_write(dir, &a), 0);
        char *text = tu_read_file(tu_path(dir, "old1.json"), NULL);
        assert_non_null(text);
        assert_null(strstr(text, "\"caller\""));
        free(text);
        assert_int_equal(status_read(tu_path(dir, "old1.json"), &b), 0);
        assert_string_equal(b.mig.caller, "");
        assert_string_equal(b.mig.peer, "10.77.0.2:7000");
        status_record_clear(&a);
        status_record_clear(&b);
}

typedef struct Unmoved {
        int bad;
        char quarantined[512], detail[512], quarantine_error[512];
} Unmoved;

static void on_bad_unmoved(const char *file, const char *quarantined, int error, const char *detail,
                           const char *quarantine_error, void *opaque) {
        Unmoved *u = opaque;
        (void) file;
        (void) error;
        u->bad++;
        snprintf(u->quarantined, sizeof(u->quarantined), "%s", quarantined);
        snprintf(u->detail, sizeof(u->detail), "%s", detail);
        snprintf(u->quarantine_error, sizeof(u->quarantine_error), "%s", quarantine_error);
}

/* When the quarantine folder cannot take the file (a file stands where
 * the folder should be: as root, permissions would not stop the move),
 * status_quarantine() says so, leaves the file where it was, and
 * status_load_all() hands that error to its caller beside the file's own. */
static void test_quarantine_that_cannot_move_is_reported(void **state) {
        const char *dir = tu_tmpdir("status-nomove");
        write_file(tu_path(dir, "quarantine"), "not a folder\n");
        write_file(tu_path(dir, "broken.json"), "{ nope");
        char moved[512] = "x";
        assert_true(status_quarantine(dir, tu_path(dir, "broken.json"), "test", moved, sizeof(moved)) < 0);
        assert_string_equal(moved, "");
        assert_non_null(strstr(err_msg(), "broken.json"));
        assert_int_equal(access(tu_path(dir, "broken.json"), F_OK), 0);

        Unmoved u = { 0 };
        assert_int_equal(status_load_all(dir, on_good, on_bad_unmoved, &u), 0);
        assert_int_equal(u.bad, 1);
        assert_string_equal(u.quarantined, "");
        assert_non_null(strstr(u.detail, "invalid JSON"));
        if (!strstr(u.quarantine_error, "moving ") || !strstr(u.quarantine_error, "broken.json") ||
            !strstr(u.quarantine_error, "Not a directory"))
                fail_msg("quarantine error '%s'", u.quarantine_error);
        assert_int_equal(access(tu_path(dir, "broken.json"), F_OK), 0);
}

/* A quarantined file's note is there, complete, next to it. */
static void test_quarantine_note_is_written(void **state) {
        const char *dir = tu_tmpdir("status-note");
        write_file(tu_path(dir, "n1.json"), "{");
        char moved[512], note[600];
        assert_int_equal(status_quarantine(dir, tu_path(dir, "n1.json"), "why: n1", moved, sizeof(moved)), 0);
        snprintf(note, sizeof(note), "%s.reason", moved);
        char *text = tu_read_file(note, NULL);
        assert_non_null(text);
        assert_string_equal(text, "why: n1\n");
        free(text);
        struct stat st;
        assert_int_equal(stat(note, &st), 0);
        assert_int_equal(st.st_mode & 0777, 0600);
}

static void test_vm_save_status(void **state) {
        const char *dir = tu_tmpdir("status-vm");
        Vm *vm;
        VmStatusRecord rec;
        assert_int_equal(vm_new("saved", "11111111-2222-3333-4444-555555555555", dir, NULL, &vm), 0);
        vm_lock(vm);
        vm_set_definition_locked(vm, strdup("{\"vcpus\": 2}"));
        vm_set_state_locked(vm, VM_STATE_RUNNING, VM_REASON_BOOTED);
        snprintf(vm->qmp_path, sizeof(vm->qmp_path), "/tmp/x.qmp");
        vm_unlock(vm);
        assert_int_equal(vm_save_status(vm), 0);
        assert_int_equal(status_read(tu_path(dir, "saved.json"), &rec), 0);
        assert_int_equal(rec.state, VM_STATE_RUNNING);
        assert_string_equal(rec.qmp_path, "/tmp/x.qmp");
        assert_non_null(strstr(rec.definition_json, "\"vcpus\":2"));
        status_record_clear(&rec);
        assert_int_equal(vm_remove_status(vm), 0);
        assert_int_equal(access(tu_path(dir, "saved.json"), F_OK), -1);
        vm_unref(vm);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_round_trip),
                cmocka_unit_test(test_bad_files_quarantined_others_load),
                cmocka_unit_test(test_quarantine_note_names_its_own_file_and_error),
                cmocka_unit_test(test_quarantine_notes_of_special_files_are_their_own),
                cmocka_unit_test(test_parse_errors_are_clear),
                cmocka_unit_test(test_oversized_and_special_files),
                cmocka_unit_test(test_vm_save_status),
                cmocka_unit_test(test_record_without_caller_loads),
                cmocka_unit_test(test_quarantine_that_cannot_move_is_reported),
                cmocka_unit_test(test_quarantine_note_is_written),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}

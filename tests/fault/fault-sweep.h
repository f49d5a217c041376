/* What the fault sweeps of suite 'fault' share (test-fault-migrate.c, the
 * agents' points; test-fault-evacuate.c, the coordinator's): the outcome of
 * a case and the tally of a sweep, the known failures (DROVER_FAULT_KNOWN),
 * choosing the sample (a hash of each case id and DROVER_FAULT_SEED, the
 * regression cases first, DROVER_FAULT_ONLY), reading a fault trace
 * (core/fault.h), and the one line per case and the summary every sweep
 * prints.  docs/recovery.md, "The sweep".
 *
 * The case arrays below are arrays of a sweep's own case struct whose
 * first member is its id (a char array): the helpers take the array, the
 * count and the struct's size.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>

typedef enum FsOutcome { FS_PASS, FS_FAIL, FS_KNOWN, FS_FIXED, FS_UNREACHED, _FS_OUT_MAX } FsOutcome;

typedef struct FsTally {
        int n[_FS_OUT_MAX];
} FsTally;

/* True when the whole matrix is asked for: --full (the only argument
 * accepted; exits 2 on any other), or DROVER_FAULT_FULL or DROVER_LONG (the
 * long run of every suite) set and not "0". */
bool fs_full_requested(int argc, char **argv);
/* Integer environment variable @name, or @def when unset or empty. */
int fs_env_int(const char *name, int def);
/* Read DROVER_FAULT_KNOWN (once, at start); exits when it is set but
 * cannot be read (a sweep must not run believing it knows its failures). */
void fs_known_load(void);
/* Create the empty file @path (DROVER_FAULT_ARM); fails the cmocka test. */
void fs_touch(const char *path);
/* The first fault that fired in the trace file @trace, described in @what
 * ("crash at store.commit hit 3 (pid 1234)"), or false. */
bool fs_trace_fired(const char *trace, char *what, size_t size);

/* Keep the cases whose id contains DROVER_FAULT_ONLY; returns how many. */
int fs_filter_only(void *cases, int n, size_t size);
/* Order the cases by the sample key of their id (FNV-1a mixed with
 * DROVER_FAULT_SEED): a case's place depends on its id only. */
void fs_sample_order(void *cases, int n, size_t size);
/* Move the cases named in @ids to the front; returns how many were found. */
int fs_regressions_first(void *cases, int n, size_t size, const char *const *ids, size_t n_ids);

/* Apply the known failures to @out for case @id, count it in @t and print
 * the case's line ("PASS  id  12.3 s  why [known: defect]").  Returns the
 * outcome counted. */
FsOutcome fs_report(FsTally *t, const char *id, FsOutcome out, double secs, const char *why);
/* "# @what: matrix N cases, ran M: ... PASS, ... FAIL ..." */
void fs_print_summary(const char *what, int matrix, int ran, const FsTally *t);

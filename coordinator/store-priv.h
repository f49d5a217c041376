/* Private to the store's backends (store-sqlite*.c, store-etcd.c): what
 * every backend shares so that they accept, refuse and bound the same
 * things with the same words (store-common.c).  The backends' own headers
 * (store-sqlite-priv.h) include this one.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "store.h"

/* Bounds every backend keeps: sub-tasks per job, jobs per job_list (a
 * limit of 0 means this), the newest events event_list returns. */
#define STORE_SUBTASKS_MAX 10000
#define STORE_LIST_MAX 10000
#define STORE_EVENTS_MAX 10000

/* -EINVAL unless @str is NUL-terminated within @size bytes, and non-empty
 * when @required; the detail names @what. */
int store_check_str(const char *what, const char *str, size_t size, bool required);
#define STORE_CHECK_FIELD(what, field, required) store_check_str((what), (field), sizeof(field), (required))
/* -EINVAL unless lo <= @v <= hi ("<what> <v> is out of range lo..hi"). */
int store_check_range(const char *what, long long v, long long lo, long long hi);
/* Times are sorted on: -EINVAL above INT64_MAX (SQLite's signed INTEGER). */
int store_check_time(const char *what, uint64_t t);

/* Input of the calls, each -EINVAL naming the field (0 when valid). */
int store_check_host(const StoreHost *h);
int store_check_job(const StoreJob *j);
/* job_update: only the fields it changes (id, phase, error). */
int store_check_job_update(const StoreJob *j);
int store_check_subtask(const StoreSubtask *t);
/* A job with its sub-tasks: each valid, its own, seq strictly rising, at
 * most STORE_SUBTASKS_MAX. */
int store_check_job_create(const StoreJob *j, const StoreSubtask *subs, size_t n_subs);
int store_check_event(const char *job_id, uint64_t time_unix_ms, const char *text);
/* -EINVAL when a list call has no place for its result. */
int store_check_ret(const void *ret, const void *ret_n);

/* Record one write transaction's commit latency (ns, from now_ns()) in
 * store_commit_histogram().  Any thread, any lock (an atomic update). */
void store_commit_observe(uint64_t ns);

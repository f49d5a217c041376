/* What the coordinator's cluster tests share (test-cluster-coord-evacuate.c,
 * test-cluster-coord-interrupt.c): three hosts a, b, c (cluster.h), eight
 * tiny dirtying guests of 64-128 MiB started on host a, the coordinator's
 * per-host limits of 2 out and 2 in, readers of a job's --json document
 * (its sub-tasks and history), and the checks of what an evacuation
 * promises whatever happened on the way: each guest runs exactly once,
 * where the job says, each migrated by one op that completed once, no op
 * id used twice.  The checks fail the current cmocka test; the job
 * documents are borrowed (cluster_job_get's, json_object_put by the
 * caller).
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <json-c/json.h>

#include "cluster.h"

/* Host indexes (cluster_host_index: "host-a" is A). */
#define A 0
#define B 1
#define C 2
#define N_GUESTS 8
#define MIB (1024.0 * 1024.0)
#define CTL_MS CLUSTER_CTL_MS
#define COORD_UP_MS 20000 /* the coordinator sees every host and guest */

/* The guests "ev0".."ev7" and their memory in MiB. */
extern const char *const ctu_names[N_GUESTS];
extern const int ctu_mems[N_GUESTS];
/* max_outgoing 2, max_incoming 2, and links that would allow 3 streams. */
extern const ClusterCoordOptions ctu_limits_2x2;

/* Seconds since now_ns() was @t0_ns. */
double ctu_secs_since(uint64_t t0_ns);
/* The index of guest @name in ctu_names, or -1. */
int ctu_guest_index(const char *name);

/* Start the first @n guests on host a (cluster_guest_start: fails the test
 * on error). */
void ctu_start_guests(Cluster *c, int n);

/* Sub-tasks of @job in @phase ("queued", "migrating", "done" ...). */
int ctu_count_phase(json_object *job, const char *phase);
/* The sub-task of @guest in @job, or NULL (borrowed from @job). */
json_object *ctu_sub_of(json_object *job, const char *guest);
/* History events whose text starts with @prefix (or contains it when @anywhere). */
int ctu_count_events(json_object *job, const char *prefix, bool anywhere);
/* Print @job's history / sub-tasks as "#" lines, times relative to its creation. */
void ctu_print_history(json_object *job);
void ctu_print_subtasks(json_object *job);

/* The first @n guests each run exactly once (one live QEMU across the
 * hosts), on host @expect[i], and their serial counters advance there only
 * (by 2 lines within at most 8 s, and not at all elsewhere). */
void ctu_assert_all_run_once(Cluster *c, const int expect[N_GUESTS], int n);
/* The agents' view of the sub-task's migration out of host a: GetMigration
 * on host a carries the sub-task's op id, done and successful (unless
 * @agent_forgot: host a's agent restarted since, its records are in
 * memory), the destination's record (when it keeps one) the same op; host
 * a's agent log shows that op completing once and never failing. */
void ctu_assert_migrated_once(Cluster *c, json_object *sub, bool agent_forgot);
/* Every sub-task's op id is distinct ("<job>-<seq>"). */
void ctu_assert_op_ids_distinct(json_object *job);

/* `droverctl evacuate host-a` (no --wait; @bandwidth_mib MiB/s per
 * migration or NULL) of the N_GUESTS guests: the job id into @id. */
void ctu_evacuate_async(Cluster *c, const char *bandwidth_mib, char *id, size_t size);
/* Poll job @id until at least one guest migrated while one migrates and one
 * is queued; returns that view of the job (json_object_put).  Fails the test
 * after @timeout_ms or when the job left "running". */
json_object *ctu_wait_mid_run(Cluster *c, const char *id, int timeout_ms);
/* Every guest of a succeeded evacuation of host a: its destination (b or
 * c) into @expect[i], exactly one "migrated" and one "started" event (plus
 * one per "never ran" re-queue), and ctu_assert_migrated_once. */
void ctu_assert_each_migrated_once(Cluster *c, json_object *job, int expect[N_GUESTS]);

/* The coordinator's job engine in a test process: a Coordinator on a real
 * SQLite store in a scratch folder, its hosts answered by the FAKE agents
 * of fake-agents.h, and no threads: the test runs heartbeats and scheduler
 * ticks itself (coord_inventory_heartbeat, coord_scheduler_tick), so every
 * step is deterministic.  Host "hN" has the agent address "hN:7400". */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "coord-priv.h"
#include "fake-agents.h"

/* A coordinator of @n hosts h1..hn, with @mem_mib[i] MiB and 8 CPUs each
 * (the fake agents are reset and the hosts added first; add guests with
 * ch_guest before the first plan). */
Coordinator *ch_new(const char *tag, size_t n, const uint64_t *mem_mib);
void ch_free(Coordinator *c);
/* A running guest of @mem_mib MiB, 1 vCPU, on host @host ("h1"). */
void ch_guest(const char *host, const char *name, uint64_t mem_mib);
/* Submit an evacuation (@maintenance) / a migration of one guest (@to:
 * NULL or a host); returns the submit's result, the id in @ret_id. */
int ch_evacuate(Coordinator *c, const char *host, bool maintenance, char ret_id[STORE_ID_MAX]);
int ch_migrate(Coordinator *c, const char *guest, const char *to, char ret_id[STORE_ID_MAX]);
/* One scheduler tick. */
void ch_tick(Coordinator *c);
/* @n heartbeats (COORD_MISSES_UNHEALTHY of them make a silent host unreachable). */
void ch_heartbeats(Coordinator *c, int n);
/* The sub-task of @guest in job @id (asserts it exists). */
StoreSubtask ch_sub(Coordinator *c, const char *id, const char *guest);
/* The job's record. */
StoreJob ch_job(Coordinator *c, const char *id);
/* The host's state (CoordHostState). */
int ch_host_state(Coordinator *c, const char *host);
/* Unfinished jobs in the scheduler's table. */
size_t ch_active_jobs(Coordinator *c);
/* The fake agent address of host @host. */
const char *ch_addr(const char *host);
/* Whether job @id's history has a line containing @part. */
bool ch_history_has(Coordinator *c, const char *id, const char *part);

/* Leader election of drover-coordinators on etcd (docs/ha.md).
 *
 * As etcd's own concurrency package does it: each candidate grants a lease
 * (ttl_s) and puts PREFIX/leader/<lease id in hex> under it, created only
 * if absent (Txn on create_revision 0), with its advertised API address as
 * the value.  The leader is the key with the lowest create_revision under
 * PREFIX/leader/; any other candidate watches the key just before its own
 * and looks again when that one is deleted (its lease expired or was
 * revoked).
 *
 * The election thread keeps the lease alive (a refresh every ttl/6) and
 * tracks, by the monotonic clock, until when this process may act:
 * the send time of the last refresh etcd confirmed, plus the TTL, minus the
 * margin (ttl/3, at least 1 s).  The lease cannot expire on etcd before
 * that moment (etcd counts the TTL from when it received the refresh, later
 * than it was sent), so a leader that stops acting at that moment has
 * stopped before any other candidate can be elected.  When refreshes fail,
 * election_leading() turns false at that moment even if the thread is
 * blocked; when etcd says the lease is gone, the candidate starts again
 * with a new lease (and a new key, so a new create_revision: the old fence
 * stays dead).
 *
 * Fencing: election_leading() returns the leader key and its
 * create_revision; the store (store.h, fence) guards every write with
 * them, so a deposed leader that has not noticed cannot write.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cleanup.h"

typedef struct Etcd Etcd;
typedef struct Election Election;

#define ELECTION_KEY_MAX 160
#define ELECTION_ID_MAX 256

typedef struct ElectionOptions {
        Etcd *etcd;              /* shared; outlives the election */
        const char *prefix;      /* e.g. "/drover": keys PREFIX/leader/<lease> */
        const char *id;          /* this candidate's value: its advertised API address */
        int64_t ttl_s;           /* lease TTL, >= 2; 0: 3 */
        /* Called from the election thread whenever leading or the known
         * leader changes (no lock of the election held; may call
         * election_leading()/election_leader()). */
        void (*changed)(void *userdata);
        void *userdata;
} ElectionOptions;

/* Start campaigning (the election thread).  Returns at once; -errno for bad
 * options or when the thread cannot start. */
int election_start(const ElectionOptions *o, Election **ret);

/* Whether this process is the leader and may act now: elected, and the
 * lease is valid by the monotonic clock for longer than the margin.
 * With @key (ELECTION_KEY_MAX bytes) and @ret_create_revision when not
 * NULL: the leader key and its create_revision (the fence).  Any thread;
 * cheap (a mutex and the clock). */
bool election_leading(Election *el, char *key, int64_t *ret_create_revision);

/* Monotonic nanoseconds until which this process may act (0 when not
 * leading).  Any thread. */
uint64_t election_valid_until_ns(Election *el);

/* The current leader's id (its API address) into @buf, "" when unknown.
 * Any thread. */
void election_leader(Election *el, char *buf, size_t size);

/* Resign and stop: stop acting at once, revoke the lease (so a standby
 * takes over without waiting for the TTL), join the thread.  Accepts NULL. */
void election_stop(Election *el);
DEFINE_POINTER_CLEANUP(Election, election_stop);

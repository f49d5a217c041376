/* Agent-to-agent calls (see agent-peer.h).
 *
 * Channels are kept, not made per migration.  Each agent has one
 * AgentPeerCache of PeerChannels, one per peer address: a gRPC client that
 * any number of threads share (rpcclient.h) and a reference count.  The
 * cache holds one reference on each listed channel, every open handle
 * (AgentPeer) one more, and the last one frees the client, so a channel that
 * leaves the cache while a migration uses it lives until that migration
 * closes it.  agent_peer_open() looks the address up and takes a reference;
 * only when there is no usable channel does it make one, with no lock held
 * (reading the PEM files and creating the channel), and then lists it unless
 * another thread listed one meanwhile.
 *
 * A listed channel is dropped from the cache (and made again at the next
 * open) when:
 * - its TLS material changed: the identity (device, inode, size, mtime) of
 *   the certificate, key and CA files differs from when it was made, so a
 *   rotated certificate is used by the next migration;
 * - gRPC gave up on it for now (rpc_client_broken(): a failed connection in
 *   reconnect backoff), or a call on it failed in transport (nothing sent,
 *   UNAVAILABLE, DEADLINE_EXCEEDED, INTERNAL, UNKNOWN): a restarted or
 *   partitioned peer then gets a fresh connection attempt and a "not sent"
 *   answer as it did when every migration made its own channel;
 * - no handle used it for PEER_IDLE_MS: at the next open, or at
 *   agent_peer_cache_sweep(), which the agent's main thread calls every few
 *   seconds; a quiet agent keeps no connections;
 * - the cache is full (PEER_CACHE_MAX): the least recently used idle one.
 *
 * Why: a channel costs a TLS handshake on both agents, the PEM files read
 * and parsed into a new SSL context, and a few hundred KiB of short-lived
 * allocations on the migration's threads.  Made twice per migration, that
 * was ~10 ms of CPU per migration and spread the agent's heap, so the pages
 * it wrote after each fork of QEMU, each a page fault, grew with the number
 * of migrations (docs/performance.md, "Soak").
 *
 * Locks: cache->lock (class "peer-cache") is a leaf, held only for list
 * updates; no call, file read or channel destruction happens under it.
 */
#include "agent-peer.h"

#include <assert.h>
#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "agent-peer-priv.h"
#include "agent.h"
#include "agent.pb-c.h"
#include "deadline.h"
#include "err.h"
#include "fault.h"
#include "lock.h"
#include "migparams-pb.h"
#include "rpcclient.h"

static LockClass peer_cache_lock_class = LOCK_CLASS_INIT("peer-cache");

/* Which certificate, key and CA files a channel was made from. */
typedef struct PeerTlsId {
        struct {
                dev_t dev;
                ino_t ino;
                off_t size;
                struct timespec mtime;
        } file[3];
} PeerTlsId;

/* One channel to a peer. */
typedef struct PeerChannel {
        atomic_int refs;                     /* atomic: the cache's while listed, one per handle */
        RpcClient *cl;                       /* immutable; the client locks itself */
        char *addr;                          /* immutable */
        PeerTlsId tls;                       /* immutable */
        atomic_uint_fast64_t last_used_ns;   /* atomic: when a handle last let go */
        struct PeerChannel *next;            /* lock: cache->lock while listed */
} PeerChannel;

/* cache->lock protects the list, its length and the links of the listed
 * channels. */
struct AgentPeerCache {
        Lock lock;
        PeerChannel *list;                   /* lock: cache->lock; most recently opened first */
        size_t n;                            /* lock: cache->lock */
};

struct AgentPeer {
        AgentPeerCache *cache;               /* immutable; NULL: the channel is not cached */
        PeerChannel *ch;                     /* immutable; a reference */
};

static void peer_tls_id(const Agent *a, PeerTlsId *ret) {
        const char *paths[3] = { a->cfg.tls_cert, a->cfg.tls_key, a->cfg.tls_ca };
        struct stat st;
        *ret = (PeerTlsId){ 0 };
        for (int i = 0; i < 3; i++)
                if (paths[i][0] && stat(paths[i], &st) == 0) {
                        ret->file[i].dev = st.st_dev;
                        ret->file[i].ino = st.st_ino;
                        ret->file[i].size = st.st_size;
                        ret->file[i].mtime = st.st_mtim;
                }
}

static bool peer_tls_same(const PeerTlsId *x, const PeerTlsId *y) {
        for (int i = 0; i < 3; i++)
                if (x->file[i].dev != y->file[i].dev || x->file[i].ino != y->file[i].ino ||
                    x->file[i].size != y->file[i].size || x->file[i].mtime.tv_sec != y->file[i].mtime.tv_sec ||
                    x->file[i].mtime.tv_nsec != y->file[i].mtime.tv_nsec)
                        return false;
        return true;
}

static void channel_unref(PeerChannel *ch) {
        if (!ch || atomic_fetch_sub(&ch->refs, 1) != 1)
                return;
        rpc_client_free(ch->cl);
        free(ch->addr);
        free(ch);
}

/* Unref every channel of a list unlinked from the cache (no lock held). */
static void channel_unref_list(PeerChannel *dead) {
        while (dead) {
                PeerChannel *next = dead->next;
                channel_unref(dead);
                dead = next;
        }
}

static int channel_new(const Agent *a, const char *addr, const PeerTlsId *id, PeerChannel **ret) {
        RpcTls tls = { .cert_file = a->cfg.tls_cert, .key_file = a->cfg.tls_key, .ca_file = a->cfg.tls_ca };
        RpcClientOptions o = { .tls = a->cfg.tls_cert[0] ? &tls : NULL, .default_timeout_ms = 10000,
                               .connect_timeout_ms = PEER_CONNECT_MS };
        PeerChannel *ch = calloc(1, sizeof(*ch));
        int r;
        if (!ch || !(ch->addr = strdup(addr))) {
                free(ch);
                return err_set(-ENOMEM, "out of memory");
        }
        if ((r = rpc_client_new(addr, &o, &ch->cl)) < 0) {
                free(ch->addr);
                free(ch);
                return err_prefix(r, "peer agent %s", addr);
        }
        ch->tls = *id;
        atomic_init(&ch->refs, 1);
        atomic_init(&ch->last_used_ns, now_ns());
        *ret = ch;
        return 0;
}

/* Unlink *@link's channel onto *@dead (the caller unrefs it unlocked). */
static void cache_unlink_locked(AgentPeerCache *c, PeerChannel **link, PeerChannel **dead) {
        lock_assert_held(&c->lock);
        PeerChannel *ch = *link;
        *link = ch->next;
        ch->next = *dead;
        *dead = ch;
        c->n--;
}

static bool channel_idle(PeerChannel *ch, uint64_t now) {
        return atomic_load(&ch->refs) == 1 && now - atomic_load(&ch->last_used_ns) >= PEER_IDLE_MS * NSEC_PER_MSEC;
}

/* Move the channels that must go (idle too long; for @addr, other TLS
 * material or broken) onto *@dead, and return a new reference to the
 * usable channel for @addr, or NULL.  @addr NULL: only sweep. */
static PeerChannel *cache_take_locked(AgentPeerCache *c, const char *addr, const PeerTlsId *id, uint64_t now,
                                      PeerChannel **dead) {
        PeerChannel *found = NULL;
        lock_assert_held(&c->lock);
        for (PeerChannel **link = &c->list; *link;) {
                PeerChannel *ch = *link;
                bool mine = addr && !found && strcmp(ch->addr, addr) == 0;
                if (channel_idle(ch, now) || (mine && (!peer_tls_same(&ch->tls, id) || rpc_client_broken(ch->cl)))) {
                        cache_unlink_locked(c, link, dead);
                        continue;
                }
                if (mine) {
                        atomic_fetch_add(&ch->refs, 1);
                        found = ch;
                }
                link = &ch->next;
        }
        return found;
}

/* List @ch (the caller's reference stays the caller's), making room by
 * dropping the least recently used idle channel; when every listed channel
 * is in use, @ch is simply not cached. */
static void cache_add_locked(AgentPeerCache *c, PeerChannel *ch, PeerChannel **dead) {
        lock_assert_held(&c->lock);
        if (c->n >= PEER_CACHE_MAX) {
                PeerChannel **lru = NULL;
                for (PeerChannel **link = &c->list; *link; link = &(*link)->next)
                        if (atomic_load(&(*link)->refs) == 1 &&
                            (!lru || atomic_load(&(*link)->last_used_ns) <= atomic_load(&(*lru)->last_used_ns)))
                                lru = link;
                if (!lru)
                        return;
                cache_unlink_locked(c, lru, dead);
        }
        atomic_fetch_add(&ch->refs, 1);
        ch->next = c->list;
        c->list = ch;
        c->n++;
}

int agent_peer_cache_new(AgentPeerCache **ret) {
        AgentPeerCache *c = calloc(1, sizeof(*c));
        if (!c)
                return err_set(-ENOMEM, "out of memory");
        lock_init(&c->lock, &peer_cache_lock_class);
        *ret = c;
        return 0;
}

void agent_peer_cache_free(AgentPeerCache *c) {
        if (!c)
                return;
        while (c->list) {
                PeerChannel *ch = c->list;
                c->list = ch->next;
                assert(atomic_load(&ch->refs) == 1); /* no handle may outlive the cache */
                channel_unref(ch);
        }
        lock_destroy(&c->lock);
        free(c);
}

void agent_peer_cache_sweep_at(AgentPeerCache *c, uint64_t now) {
        PeerChannel *dead = NULL;
        if (!c)
                return;
        lock_acquire(&c->lock);
        (void) cache_take_locked(c, NULL, NULL, now, &dead);
        lock_release(&c->lock);
        channel_unref_list(dead);
}

void agent_peer_cache_sweep(AgentPeerCache *c) {
        agent_peer_cache_sweep_at(c, now_ns());
}

size_t agent_peer_cache_size(AgentPeerCache *c) {
        lock_acquire(&c->lock);
        size_t n = c->n;
        lock_release(&c->lock);
        return n;
}

RpcClient *agent_peer_client(AgentPeer *p) {
        return p->ch->cl;
}

int agent_peer_open(Agent *a, const char *addr, AgentPeer **ret) {
        AgentPeerCache *c = a->peers;
        PeerChannel *ch = NULL, *made = NULL, *dead = NULL;
        PeerTlsId id;
        int r;
        AgentPeer *p = calloc(1, sizeof(*p));
        if (!p)
                return err_set(-ENOMEM, "out of memory");
        peer_tls_id(a, &id);
        if (c) {
                lock_acquire(&c->lock);
                ch = cache_take_locked(c, addr, &id, now_ns(), &dead);
                lock_release(&c->lock);
        }
        if (!ch) {
                if ((r = channel_new(a, addr, &id, &made)) < 0) {
                        channel_unref_list(dead);
                        free(p);
                        return r;
                }
                if (c) {
                        lock_acquire(&c->lock);
                        ch = cache_take_locked(c, addr, &id, now_ns(), &dead); /* listed meanwhile? */
                        if (!ch) {
                                cache_add_locked(c, made, &dead);
                                ch = TAKE_PTR(made);
                        }
                        lock_release(&c->lock);
                } else
                        ch = TAKE_PTR(made);
        }
        channel_unref(made);
        channel_unref_list(dead);
        p->cache = c;
        p->ch = ch;
        *ret = p;
        return 0;
}

void agent_peer_close(AgentPeer *p) {
        if (!p)
                return;
        atomic_store(&p->ch->last_used_ns, now_ns());
        channel_unref(p->ch);
        free(p);
}

/* A call on @p's channel failed in transport: take the channel out of the
 * cache, so the next open makes a new connection attempt. */
static void peer_forget(AgentPeer *p) {
        PeerChannel *dead = NULL;
        if (!p->cache)
                return;
        lock_acquire(&p->cache->lock);
        for (PeerChannel **link = &p->cache->list; *link; link = &(*link)->next)
                if (*link == p->ch) {
                        cache_unlink_locked(p->cache, link, &dead);
                        break;
                }
        lock_release(&p->cache->lock);
        channel_unref_list(dead);
}

static bool transport_failure(const RpcStatus *st) {
        return st->not_sent || st->code == RPC_UNAVAILABLE || st->code == RPC_DEADLINE_EXCEEDED ||
               st->code == RPC_INTERNAL || st->code == RPC_UNKNOWN;
}

/* One call; @st (may be NULL) receives its status.  An injected fault
 * counts as "may have been seen" (not_sent false). */
static int call_status(AgentPeer *p, const char *method, const ProtobufCMessage *req, int64_t timeout_ms,
                       ProtobufCMessage **resp, RpcStatus *st) {
        RpcStatus local = { 0 };
        int r;
        st = st ? st : &local;
        *st = (RpcStatus){ 0 };
        if ((r = fault_hit_in("peer", method)) < 0) {
                st->code = RPC_UNAVAILABLE;
                return r;
        }
        r = rpc_client_unary(p->ch->cl, &drover__v1__agent__descriptor, method, req, timeout_ms, resp, st);
        if (r < 0 && transport_failure(st))
                peer_forget(p);
        return r;
}

static int call(AgentPeer *p, const char *method, const ProtobufCMessage *req, int64_t timeout_ms,
                ProtobufCMessage **resp) {
        return call_status(p, method, req, timeout_ms, resp, NULL);
}

/* Where the destination listens, from a MigratePrepare (or MigrateRecover)
 * answer: host and port as answered (an older destination sends only a
 * URI), checked. */
static int stream_answer(const Drover__V1__MigratePrepareResponse *resp, MigStream *ret) {
        MigTransport t = (MigTransport) resp->transport;
        if (t == MIG_TRANSPORT_DEFAULT) /* an agent older than the field */
                t = resp->tls ? MIG_TRANSPORT_TLS : MIG_TRANSPORT_PLAIN;
        if (mig_stream_set(ret, resp->host ? resp->host : "", resp->port, t) < 0)
                return err_prefix(-EPROTO, "the destination answered no usable stream address (an agent older "
                                  "than its peer?)");
        ret->multifd_channels = resp->multifd_channels;
        return 0;
}

/* The NBD part of a prepare answer into @st (n disks were asked for). */
static int storage_answer(const Drover__V1__MigratePrepareResponse *resp, MigStorage *st) {
        MigStream probe;
        if (!st || st->n == 0)
                return 0;
        if (resp->n_nbd_exports != st->n || !resp->nbd_host ||
            mig_stream_set(&probe, resp->nbd_host, resp->nbd_port, MIG_TRANSPORT_PLAIN) < 0)
                return err_set(-EPROTO, "the destination answered no usable NBD server for the %zu local disk(s) "
                               "(an agent that does not copy local disks?)", st->n);
        snprintf(st->nbd_host, sizeof(st->nbd_host), "%s", resp->nbd_host);
        st->nbd_port = resp->nbd_port;
        for (size_t i = 0; i < st->n; i++) {
                const char *e = resp->nbd_exports[i];
                if (!e || !e[0] || strlen(e) >= MIG_NBD_EXPORT_MAX || id_check("nbd export", e, MIG_NBD_EXPORT_MAX - 1) < 0)
                        return err_set(-EPROTO, "the destination answered an unusable NBD export name");
                snprintf(st->exports[i], sizeof(st->exports[i]), "%s", e);
        }
        return 0;
}

int agent_peer_prepare(AgentPeer *p, const char *op, const char *definition_json, const MigParams *mp,
                       const char *source_addr, int64_t timeout_ms, MigStorage *storage, MigStream *ret) {
        Drover__V1__MigratePrepareRequest req = DROVER__V1__MIGRATE_PREPARE_REQUEST__INIT;
        Drover__V1__MigrationParams params;
        Drover__V1__MigratePrepareResponse *resp = NULL;
        Drover__V1__MigrateLocalDisk disks[MIG_STORAGE_MAX], *dp[MIG_STORAGE_MAX];
        mig_params_to_pb(mp, &params);
        req.op_id = (char *) op;
        req.definition_json = (char *) definition_json;
        req.params = &params;
        req.source = (char *) source_addr;
        for (size_t i = 0; storage && i < storage->n && i < MIG_STORAGE_MAX; i++) {
                drover__v1__migrate_local_disk__init(&disks[i]);
                disks[i].index = storage->disks[i].index;
                disks[i].virtual_size = storage->disks[i].virtual_size;
                disks[i].format = storage->disks[i].format;
                dp[i] = &disks[i];
                req.n_local_disks = i + 1;
        }
        req.local_disks = req.n_local_disks ? dp : NULL;
        int r = call(p, "MigratePrepare", &req.base, timeout_ms, (ProtobufCMessage **) &resp);
        if (r < 0)
                return r;
        r = stream_answer(resp, ret);
        if (r >= 0)
                r = storage_answer(resp, storage);
        drover__v1__migrate_prepare_response__free_unpacked(resp, NULL);
        return r;
}

int agent_peer_recover(AgentPeer *p, const char *op, const char *uuid, int64_t timeout_ms, MigStream *ret) {
        Drover__V1__MigrateRecoverRequest req = DROVER__V1__MIGRATE_RECOVER_REQUEST__INIT;
        Drover__V1__MigratePrepareResponse *resp = NULL;
        req.op_id = (char *) op;
        req.guest = (char *) uuid;
        int r = call(p, "MigrateRecover", &req.base, timeout_ms, (ProtobufCMessage **) &resp);
        if (r < 0)
                return r;
        r = stream_answer(resp, ret);
        drover__v1__migrate_prepare_response__free_unpacked(resp, NULL);
        return r;
}

int agent_peer_finish(AgentPeer *p, const char *op, const char *uuid, bool postcopy, uint64_t stop_unix_ms,
                      int64_t timeout_ms, uint64_t *ret_resume_unix_ms, bool *ret_synced,
                      PeerFinishFailure *ret_failure) {
        Drover__V1__MigrateFinishRequest req = DROVER__V1__MIGRATE_FINISH_REQUEST__INIT;
        Drover__V1__MigrateFinishResponse *resp = NULL;
        RpcStatus st;
        req.op_id = (char *) op;
        req.guest = (char *) uuid;
        req.postcopy = postcopy;
        req.postcopy_return_at_cont = postcopy; /* the source watches the rest (post-copy recovery) */
        req.source_stop_unix_ms = stop_unix_ms;
        int r = call_status(p, "MigrateFinish", &req.base, timeout_ms, (ProtobufCMessage **) &resp, &st);
        if (r < 0) {
                PeerFinishFailure f = PEER_FINISH_MAYBE_STARTED;
                if (st.not_sent)
                        f = PEER_FINISH_NOT_SENT;
                else if (st.code == RPC_FAILED_PRECONDITION && strstr(st.details, PEER_FINISH_NOT_STARTED_MARK))
                        f = PEER_FINISH_NOT_STARTED;
                if (ret_failure)
                        *ret_failure = f;
                return r;
        }
        *ret_resume_unix_ms = resp->resume_unix_ms;
        *ret_synced = resp->guest_time_synced;
        drover__v1__migrate_finish_response__free_unpacked(resp, NULL);
        return 0;
}

int agent_peer_cancel(AgentPeer *p, const char *op, const char *uuid, int64_t timeout_ms) {
        Drover__V1__MigrateCancelRequest req = DROVER__V1__MIGRATE_CANCEL_REQUEST__INIT;
        Drover__V1__Empty *resp = NULL;
        req.op_id = (char *) op;
        req.guest = (char *) uuid;
        int r = call(p, "MigrateCancel", &req.base, timeout_ms, (ProtobufCMessage **) &resp);
        if (r >= 0)
                drover__v1__empty__free_unpacked(resp, NULL);
        return r;
}

PeerAnswer agent_peer_owner(AgentPeer *p, const char *op, const char *uuid, int64_t timeout_ms) {
        Drover__V1__MigrationOwnerRequest req = DROVER__V1__MIGRATION_OWNER_REQUEST__INIT;
        Drover__V1__MigrationOwnerResponse *resp = NULL;
        req.op_id = (char *) op;
        req.guest = (char *) uuid;
        if (call(p, "MigrationOwner", &req.base, timeout_ms, (ProtobufCMessage **) &resp) < 0)
                return PEER_UNREACHABLE;
        PeerAnswer a;
        switch (resp->state) {
        case DROVER__V1__PEER_STATE__PEER_STATE_RUNNING: a = PEER_RUNNING; break;
        case DROVER__V1__PEER_STATE__PEER_STATE_PAUSED_COMPLETE: a = PEER_PAUSED_COMPLETE; break;
        case DROVER__V1__PEER_STATE__PEER_STATE_PAUSED: a = PEER_PAUSED; break;
        case DROVER__V1__PEER_STATE__PEER_STATE_GONE: a = PEER_GONE; break;
        case DROVER__V1__PEER_STATE__PEER_STATE_POSTCOPY: a = PEER_POSTCOPY; break;
        case DROVER__V1__PEER_STATE__PEER_STATE_DEAD: a = PEER_DEAD; break;
        /* UNKNOWN (the peer could not read its own state) and anything a
         * newer peer may send: no answer, never "gone" */
        default: a = PEER_UNREACHABLE; break;
        }
        drover__v1__migration_owner_response__free_unpacked(resp, NULL);
        return a;
}

/* The operation table and the threads that run operations (see agent-ops.h).
 *
 * A singly linked list, newest first, under one leaf lock, like the
 * migration table.  Every change stamps the record with the next
 * generation and calls every subscriber (WatchOperation streams), which
 * then copy the record again.  prune_locked() applies the retention bounds
 * whenever an operation begins or ends.
 *
 * Migrate operations have no thread here: the migration thread writes the
 * migration table, and sync_migrations() copies the outcome of every
 * running migrate operation from there before each read and each begin,
 * once agent_ops_follow_migration() said its record exists (between the
 * begin and the migration's start it has none yet, which is not "gone").
 * It collects the ids under the table lock, reads the migration table with
 * it released, and takes it again to record the outcome, so the two leaf
 * locks are never held together.
 *
 * The operations themselves (start, shutdown, the guest-agent calls) are
 * thin: each calls the agent function the blocking handler used to call
 * (agent-vm.c), which takes the jobs it always took (Start its START async
 * job), and copies what it returns into the result.
 */
#define _GNU_SOURCE
#include "agent-ops.h"
#include "agent-ops-priv.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agent-migrate.h"
#include "lock.h"
#include "log.h"

#define OPS_SUBSCRIBERS 64

typedef struct Op {
        struct Op *next;            /* lock: table->lock */
        AgentOpInfo info;           /* lock: table->lock; info.result owned by the record */
        uint64_t ended_ns;          /* lock: table->lock; monotonic, 0 while running */
        bool follow_migration;      /* lock: table->lock; migrate: its record exists, sync reads it */
} Op;

typedef struct Sub {
        void (*wake)(void *);       /* lock: table->lock; NULL = free slot */
        void *opaque;               /* lock: table->lock */
} Sub;

/* table->lock protects the list, every record in it, the counters and the
 * subscribers. */
struct AgentOps {
        Lock lock;
        Op *list;                   /* lock: table->lock; newest first */
        unsigned running;           /* lock: table->lock; records still running */
        uint64_t gen;               /* lock: table->lock; the last generation given out */
        Sub subs[OPS_SUBSCRIBERS];  /* lock: table->lock */
};

static LockClass ops_lock_class = LOCK_CLASS_INIT("operations");

static const char *const kind_names[AGENT_OP_KIND_MAX] = {
        [AGENT_OP_START] = "start",
        [AGENT_OP_SHUTDOWN] = "shutdown",
        [AGENT_OP_MIGRATE] = "migrate",
        [AGENT_OP_GUEST_PING] = "guest-ping",
        [AGENT_OP_GUEST_INFO] = "guest-info",
        [AGENT_OP_GUEST_SET_TIME] = "guest-set-time",
        [AGENT_OP_GUEST_GET_TIME] = "guest-get-time",
};

static const char *const state_names[AGENT_OP_STATE_MAX] = {
        [AGENT_OP_RUNNING] = "running",
        [AGENT_OP_SUCCEEDED] = "succeeded",
        [AGENT_OP_FAILED] = "failed",
};

const char *agent_op_kind_to_string(AgentOpKind k) {
        return k >= 0 && k < AGENT_OP_KIND_MAX ? kind_names[k] : "?";
}

const char *agent_op_state_to_string(AgentOpState s) {
        return s >= 0 && s < AGENT_OP_STATE_MAX ? state_names[s] : "?";
}

void agent_op_result_clear(AgentOpResult *r) {
        if (!r)
                return;
        ga_guest_info_clear(&r->info);
        memset(r, 0, sizeof(*r));
}

void agent_op_info_clear(AgentOpInfo *o) {
        if (o)
                agent_op_result_clear(&o->result);
}

/* A deep copy of @src into @dst (the guest-info arrays are duplicated;
 * when out of memory the copy has none). */
static void info_copy(AgentOpInfo *dst, const AgentOpInfo *src) {
        const GaGuestInfo *gi = &src->result.info;
        *dst = *src;
        dst->result.info.enabled = NULL;
        dst->result.info.disabled = NULL;
        dst->result.info.n_enabled = dst->result.info.n_disabled = 0;
        if (gi->n_enabled) {
                dst->result.info.enabled = malloc(gi->n_enabled * sizeof(*gi->enabled));
                if (dst->result.info.enabled) {
                        memcpy(dst->result.info.enabled, gi->enabled, gi->n_enabled * sizeof(*gi->enabled));
                        dst->result.info.n_enabled = gi->n_enabled;
                }
        }
        if (gi->n_disabled) {
                dst->result.info.disabled = malloc(gi->n_disabled * sizeof(*gi->disabled));
                if (dst->result.info.disabled) {
                        memcpy(dst->result.info.disabled, gi->disabled, gi->n_disabled * sizeof(*gi->disabled));
                        dst->result.info.n_disabled = gi->n_disabled;
                }
        }
}

int agent_ops_new(AgentOps **ret) {
        AgentOps *t = calloc(1, sizeof(*t));
        if (!t)
                return err_set(-ENOMEM, "out of memory");
        lock_init(&t->lock, &ops_lock_class);
        *ret = t;
        return 0;
}

static void op_free(Op *o) {
        agent_op_info_clear(&o->info);
        free(o);
}

void agent_ops_free(AgentOps *t) {
        if (!t)
                return;
        for (Op *o = t->list, *next; o; o = next) {
                next = o->next;
                op_free(o);
        }
        lock_destroy(&t->lock);
        free(t);
}

static Op *find_locked(AgentOps *t, const char *id) {
        lock_assert_held(&t->lock);
        Op *o = t->list;
        while (o && strcmp(o->info.id, id) != 0)
                o = o->next;
        return o;
}

static void changed_locked(AgentOps *t, Op *o) {
        lock_assert_held(&t->lock);
        o->info.generation = ++t->gen;
        for (size_t i = 0; i < OPS_SUBSCRIBERS; i++)
                if (t->subs[i].wake)
                        t->subs[i].wake(t->subs[i].opaque);
}

/* Forget the finished records past the bounds: beyond the AGENT_OPS_KEEP
 * newest finished ones, or ended more than AGENT_OPS_KEEP_MS before @now. */
static void prune_locked(AgentOps *t, uint64_t now) {
        lock_assert_held(&t->lock);
        size_t done = 0;
        for (Op **pp = &t->list; *pp;) {
                Op *o = *pp;
                bool old = o->ended_ns && (++done > AGENT_OPS_KEEP ||
                                           (now > o->ended_ns && now - o->ended_ns > AGENT_OPS_KEEP_MS * NSEC_PER_MSEC));
                if (old) {
                        *pp = o->next;
                        op_free(o);
                } else
                        pp = &o->next;
        }
}

void agent_ops_prune(AgentOps *t, uint64_t now) {
        lock_acquire(&t->lock);
        prune_locked(t, now);
        lock_release(&t->lock);
}

size_t agent_ops_count(AgentOps *t) {
        size_t n = 0;
        lock_acquire(&t->lock);
        for (Op *o = t->list; o; o = o->next)
                n++;
        lock_release(&t->lock);
        return n;
}

/* End @o (running) with @r: moves @res into the record. */
static void end_locked(AgentOps *t, Op *o, int r, const char *error, AgentOpResult *res) {
        lock_assert_held(&t->lock);
        assert(o->info.state == AGENT_OP_RUNNING);
        o->info.state = r >= 0 ? AGENT_OP_SUCCEEDED : AGENT_OP_FAILED;
        o->info.err = r < 0 ? r : 0;
        snprintf(o->info.error, sizeof(o->info.error), "%s", r < 0 && error ? error : "");
        o->info.ended_unix_ms = wall_ns() / NSEC_PER_MSEC;
        o->ended_ns = now_ns();
        if (res) {
                agent_op_result_clear(&o->info.result);
                o->info.result = *res;
                memset(res, 0, sizeof(*res));
        }
        t->running--;
        changed_locked(t, o);
}

/* Copy the outcome of every running migrate operation whose migration
 * ended from the migration table (see the top of the file). */
static void sync_migrations(Agent *a) {
        AgentOps *t = a->ops;
        char (*ids)[OP_ID_MAX] = NULL;
        size_t n = 0;
        lock_acquire(&t->lock);
        for (Op *o = t->list; o; o = o->next)
                if (o->follow_migration && o->info.state == AGENT_OP_RUNNING)
                        n++;
        if (n)
                ids = malloc(n * sizeof(*ids));
        n = 0;
        for (Op *o = t->list; ids && o; o = o->next)
                if (o->follow_migration && o->info.state == AGENT_OP_RUNNING)
                        memcpy(ids[n++], o->info.id, OP_ID_MAX);
        lock_release(&t->lock);

        for (size_t i = 0; i < n; i++) {
                MigResult m;
                int r = agent_migtable_result_of(a->migrations, ids[i], false, &m);
                if (r >= 0 && !m.done)
                        continue;
                char why[ERR_MSG_MAX];
                if (r < 0)
                        snprintf(why, sizeof(why), "the migration's record was forgotten before its outcome "
                                                   "was read: look at the guest (GetGuest) on both hosts");
                else
                        snprintf(why, sizeof(why), "%s", m.error[0] ? m.error : "the migration failed");
                lock_acquire(&t->lock);
                Op *o = find_locked(t, ids[i]);
                if (o && o->info.state == AGENT_OP_RUNNING)
                        end_locked(t, o, r >= 0 && m.success ? 0 : AGENT_OP_MIGRATION_FAILED, why, NULL);
                lock_release(&t->lock);
        }
        free(ids);
}

int agent_ops_begin(Agent *a, AgentOpKind kind, const char *guest, const char *id, AgentOpInfo *ret) {
        AgentOps *t = a->ops;
        int r;
        sync_migrations(a);
        lock_acquire(&t->lock);
        prune_locked(t, now_ns());
        Op *o = find_locked(t, id);
        if (o) {
                if (o->info.kind != kind || strcmp(o->info.guest, guest) != 0)
                        r = err_set(-EEXIST, "operation %s is a %s of guest %s, not a %s of guest %s", id,
                                    agent_op_kind_to_string(o->info.kind), o->info.guest,
                                    agent_op_kind_to_string(kind), guest);
                else {
                        if (ret)
                                info_copy(ret, &o->info);
                        r = 0;
                }
                goto out;
        }
        if (t->running >= AGENT_OPS_RUNNING_MAX) {
                r = err_set(-EAGAIN, "%u operations run on this agent, the most it runs at once; retry later",
                            t->running);
                goto out;
        }
        o = calloc(1, sizeof(*o));
        if (!o) {
                r = err_set(-ENOMEM, "out of memory");
                goto out;
        }
        snprintf(o->info.id, sizeof(o->info.id), "%s", id);
        snprintf(o->info.guest, sizeof(o->info.guest), "%s", guest);
        o->info.kind = kind;
        o->info.state = AGENT_OP_RUNNING;
        o->info.created_unix_ms = wall_ns() / NSEC_PER_MSEC;
        o->next = t->list;
        t->list = o;
        t->running++;
        changed_locked(t, o);
        if (ret)
                info_copy(ret, &o->info);
        r = 1;
out:
        lock_release(&t->lock);
        return r;
}

void agent_ops_abandon(Agent *a, const char *id) {
        AgentOps *t = a->ops;
        lock_acquire(&t->lock);
        for (Op **pp = &t->list; *pp; pp = &(*pp)->next)
                if (strcmp((*pp)->info.id, id) == 0) {
                        Op *o = *pp;
                        *pp = o->next;
                        if (o->info.state == AGENT_OP_RUNNING)
                                t->running--;
                        op_free(o);
                        break;
                }
        lock_release(&t->lock);
}

void agent_ops_end(Agent *a, const char *id, int r, const char *error, AgentOpResult *res) {
        AgentOps *t = a->ops;
        char why[ERR_MSG_MAX];
        snprintf(why, sizeof(why), "%s", r < 0 ? (error ? error : err_str(r)) : "");
        lock_acquire(&t->lock);
        Op *o = find_locked(t, id);
        if (o && o->info.state == AGENT_OP_RUNNING)
                end_locked(t, o, r, why, res);
        prune_locked(t, now_ns());
        lock_release(&t->lock);
        agent_op_result_clear(res);
}

void agent_ops_follow_migration(Agent *a, const char *id) {
        AgentOps *t = a->ops;
        lock_acquire(&t->lock);
        Op *o = find_locked(t, id);
        if (o && o->info.kind == AGENT_OP_MIGRATE)
                o->follow_migration = true;
        lock_release(&t->lock);
}

int agent_ops_get(Agent *a, const char *id, AgentOpInfo *ret) {
        AgentOps *t = a->ops;
        int r = 0;
        sync_migrations(a);
        lock_acquire(&t->lock);
        Op *o = find_locked(t, id);
        if (o)
                info_copy(ret, &o->info);
        else
                r = err_set(-ENOENT, "no operation %s is known to this agent (never started, finished more "
                                     "than an hour or %d operations ago, or before the agent restarted)",
                            id, AGENT_OPS_KEEP);
        lock_release(&t->lock);
        return r;
}

int agent_ops_subscribe(Agent *a, void (*wake)(void *), void *opaque) {
        AgentOps *t = a->ops;
        int id = -ENOSPC;
        lock_acquire(&t->lock);
        for (int i = 0; i < OPS_SUBSCRIBERS; i++)
                if (!t->subs[i].wake) {
                        t->subs[i] = (Sub){ wake, opaque };
                        id = i;
                        break;
                }
        lock_release(&t->lock);
        return id < 0 ? err_set(id, "%d operation watchers already", OPS_SUBSCRIBERS) : id;
}

void agent_ops_unsubscribe(Agent *a, int id) {
        AgentOps *t = a->ops;
        if (id < 0 || id >= OPS_SUBSCRIBERS)
                return;
        lock_acquire(&t->lock);
        t->subs[id] = (Sub){ 0 };
        lock_release(&t->lock);
}

/* ---- running operations -------------------------------------------------------- */

typedef struct OpRun {
        Agent *a;
        Vm *vm;                     /* referenced */
        char id[OP_ID_MAX];
        AgentOpFn fn;
        void *args;                 /* owned */
} OpRun;

static void *op_thread(void *arg) {
        OpRun *run = arg;
        Agent *a = run->a;
        AgentOpResult res = { 0 };
        int r = run->fn(a, run->vm, run->id, run->args, &res);
        agent_ops_end(a, run->id, r, NULL, &res);
        vm_unref(run->vm);
        free(run->args);
        free(run);
        atomic_fetch_sub(&a->background, 1);
        return NULL;
}

int agent_ops_run(Agent *a, AgentOpKind kind, Vm *vm, const char *id, AgentOpFn fn, void *args,
                  AgentOpInfo *ret) {
        OpRun *run = calloc(1, sizeof(*run));
        if (!run) {
                free(args);
                return err_set(-ENOMEM, "out of memory");
        }
        int r = agent_ops_begin(a, kind, vm ? vm->name : "", id, ret);
        if (r <= 0) {
                free(args);
                free(run);
                return r;
        }
        *run = (OpRun){ .a = a, .vm = vm ? vm_ref(vm) : NULL, .fn = fn, .args = args };
        snprintf(run->id, sizeof(run->id), "%s", id);
        pthread_t th;
        atomic_fetch_add(&a->background, 1);
        if (pthread_create(&th, NULL, op_thread, run) != 0) {
                atomic_fetch_sub(&a->background, 1);
                agent_ops_abandon(a, id);
                vm_unref(run->vm);
                free(run->args);
                free(run);
                agent_op_info_clear(ret);
                return err_set(-EAGAIN, "cannot start a thread for operation %s", id);
        }
        pthread_detach(th);
        return 1;
}

/* ---- the operations --------------------------------------------------------------- */

typedef struct StartArgs {
        bool paused;
        int64_t timeout_ms;
} StartArgs;

static int op_start(Agent *a, Vm *vm, const char *op, void *args, AgentOpResult *res) {
        StartArgs *s = args;
        int r = agent_vm_start(a, vm, op, s->paused, s->timeout_ms);
        vm_snapshot(vm, &res->status);
        res->has_status = true;
        return r;
}

int agent_ops_start_guest(Agent *a, Vm *vm, const char *id, bool paused, int64_t timeout_ms, AgentOpInfo *ret) {
        StartArgs *s = malloc(sizeof(*s));
        if (!s)
                return err_set(-ENOMEM, "out of memory");
        *s = (StartArgs){ .paused = paused, .timeout_ms = timeout_ms };
        return agent_ops_run(a, AGENT_OP_START, vm, id, op_start, s, ret);
}

typedef struct ShutdownArgs {
        int64_t timeout_ms;
        bool force;
} ShutdownArgs;

static int op_shutdown(Agent *a, Vm *vm, const char *op, void *args, AgentOpResult *res) {
        ShutdownArgs *s = args;
        int r = agent_vm_shutdown(a, vm, op, s->timeout_ms, s->force);
        vm_snapshot(vm, &res->status);
        res->has_status = true;
        return r;
}

int agent_ops_shutdown_guest(Agent *a, Vm *vm, const char *id, int64_t timeout_ms, bool force,
                             AgentOpInfo *ret) {
        ShutdownArgs *s = malloc(sizeof(*s));
        if (!s)
                return err_set(-ENOMEM, "out of memory");
        *s = (ShutdownArgs){ .timeout_ms = timeout_ms > 0 ? timeout_ms : 60000, .force = force };
        return agent_ops_run(a, AGENT_OP_SHUTDOWN, vm, id, op_shutdown, s, ret);
}

static int op_guest_ping(Agent *a, Vm *vm, const char *op, void *args, AgentOpResult *res) {
        (void) args;
        return agent_vm_guest_ping(a, vm, op, &res->ping_us);
}

static int op_guest_info(Agent *a, Vm *vm, const char *op, void *args, AgentOpResult *res) {
        (void) args;
        return agent_vm_guest_info(a, vm, op, &res->info);
}

static int op_guest_set_time(Agent *a, Vm *vm, const char *op, void *args, AgentOpResult *res) {
        const AgentGaArgs *g = args;
        return agent_vm_guest_set_time(a, vm, op, g->time_ns, g->from_rtc, &res->time_before_ns,
                                       &res->time_after_ns);
}

static int op_guest_get_time(Agent *a, Vm *vm, const char *op, void *args, AgentOpResult *res) {
        (void) args;
        return agent_vm_guest_get_time(a, vm, op, &res->time_ns);
}

int agent_ops_guest_agent(Agent *a, Vm *vm, const char *id, AgentOpKind kind, const AgentGaArgs *args,
                          AgentOpInfo *ret) {
        AgentOpFn fn;
        switch (kind) {
        case AGENT_OP_GUEST_PING: fn = op_guest_ping; break;
        case AGENT_OP_GUEST_INFO: fn = op_guest_info; break;
        case AGENT_OP_GUEST_SET_TIME: fn = op_guest_set_time; break;
        case AGENT_OP_GUEST_GET_TIME: fn = op_guest_get_time; break;
        default: return err_set(-EINVAL, "%s is not a guest-agent operation", agent_op_kind_to_string(kind));
        }
        AgentGaArgs *g = calloc(1, sizeof(*g));
        if (!g)
                return err_set(-ENOMEM, "out of memory");
        if (args)
                *g = *args;
        return agent_ops_run(a, kind, vm, id, fn, g, ret);
}

int agent_ops_migrate(Agent *a, Vm *vm, const char *id, const char *dest_addr,
                      const MigParams *p, AgentOpInfo *ret, MigResult *ret_mig) {
        /* registered first, so a retry that races this call finds it */
        int r = agent_ops_begin(a, AGENT_OP_MIGRATE, vm->name, id, ret);
        if (r < 0)
                return r;
        if (r == 0) {
                if (agent_migtable_result_of(a->migrations, id, false, ret_mig) < 0)
                        memset(ret_mig, 0, sizeof(*ret_mig));
                return 0;
        }
        int m = agent_migrate(a, vm, id, dest_addr, p, false, ret_mig);
        if (m < 0) {
                /* nothing started: the call reports the error, a retry may begin again */
                char why[ERR_MSG_MAX];
                snprintf(why, sizeof(why), "%s", err_str(m));
                agent_ops_abandon(a, id);
                agent_op_info_clear(ret);
                return err_set(m, "%s", why);
        }
        agent_ops_follow_migration(a, id);
        log_fields(LOG_LEVEL_INFO, LOG_FIELDS(.guest = vm->name, .op = id), "operation %s: migration of %s to %s", id,
                   vm->name, dest_addr);
        return 1;
}

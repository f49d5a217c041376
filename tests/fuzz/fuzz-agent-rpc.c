/* libFuzzer harness: the agent's request handlers (agent/agent-rpc*.c),
 * in process, without a network.
 *
 * The server half of libdrover-rpc is replaced here: agent_rpc_register()
 * hands its method table to this file's rpc_server_add_service(), and each
 * handler gets an RpcCall of this file (an arena, a status detail, a
 * stream that ends after a few messages).  A run then does what a worker
 * of the real server does with one call: the first input byte picks the
 * method from the table, the rest is unpacked as that method's request
 * with protobuf-c and checked like the server checks it (UTF-8 strings),
 * the handler runs, and an OK reply is packed.  The client half of
 * libdrover-rpc stays real (peer calls).
 *
 * Each run gets a fresh Agent (agent_new) whose state and run folders sit
 * in fuzz_tmpdir(), with one guest "g1" defined and shut off; QEMU is
 * /bin/false and every timeout is short, so a Start fails quickly instead
 * of starting a guest.  After the handler, the run waits (at most 10 s)
 * for the operation and migration threads it started, then frees the
 * agent and empties the folders: nothing is kept between runs.  An agent
 * thread that outlives that wait aborts the run, as a finding.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "agent-rpc.h"
#include "agent.h"
#include "deadline.h"
#include "err.h"
#include "fuzz-util.h"
#include "rpc-priv.h"
#include "rpcserver.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define MAX_SENDS 4

/* ---- the server half, in process ----------------------------------------- */

typedef struct ArenaBlock {
        struct ArenaBlock *next;
        max_align_t data[];
} ArenaBlock;

struct RpcCall {
        atomic_int refs;
        ArenaBlock *arena;
        const ProtobufCMethodDescriptor *md;
        int sends;
        char detail[512];
};

static const ProtobufCServiceDescriptor *service;
static const RpcMethodDef *methods;
static size_t n_methods;

int rpc_server_add_service(RpcServer *srv, const ProtobufCServiceDescriptor *svc, const RpcMethodDef *defs,
                           size_t n_defs, void *user) {
        (void) srv;
        (void) user;
        service = svc;
        methods = defs;
        n_methods = n_defs;
        return 0;
}

unsigned rpc_server_n_lanes(RpcServer *srv) {
        (void) srv;
        return 0;
}

int rpc_server_lane_stats(RpcServer *srv, unsigned lane, RpcLaneStats *ret) {
        (void) srv;
        (void) lane;
        (void) ret;
        return -ENOENT;
}

void *rpc_call_alloc(RpcCall *call, size_t size) {
        ArenaBlock *b = calloc(1, sizeof(*b) + size);
        if (!b)
                abort(); /* as the real arena does */
        b->next = call->arena;
        call->arena = b;
        return b->data;
}

char *rpc_call_strdup(RpcCall *call, const char *s) {
        size_t n = strlen(s ? s : "") + 1;
        return memcpy(rpc_call_alloc(call, n), s ? s : "", n);
}

RpcCode rpc_call_fail(RpcCall *call, RpcCode code, const char *fmt, ...) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(call->detail, sizeof(call->detail), fmt, ap);
        va_end(ap);
        return code;
}

RpcCode rpc_call_fail_errno(RpcCall *call, int negerrno) {
        snprintf(call->detail, sizeof(call->detail), "%s", err_str(negerrno));
        err_clear();
        return rpc_status_from_errno(negerrno);
}

/* Pack what a stream sends, as the transport would; the stream is over
 * after MAX_SENDS messages. */
int rpc_call_send(RpcCall *call, const ProtobufCMessage *msg) {
        if (!call->md || msg->descriptor != call->md->output)
                return -EINVAL;
        if (call->sends++ >= MAX_SENDS)
                return -ECANCELED;
        size_t n = protobuf_c_message_get_packed_size(msg);
        uint8_t *buf = malloc(n ? n : 1);
        if (!buf)
                abort();
        protobuf_c_message_pack(msg, buf);
        free(buf);
        return 0;
}

/* A stream's client is gone once it waits: the handler must end it. */
RpcWait rpc_call_wait(RpcCall *call, int64_t timeout_ms) {
        (void) call;
        (void) timeout_ms;
        return RPC_WAIT_CANCELLED;
}

void rpc_call_wake(RpcCall *call) {
        (void) call;
}

RpcCall *rpc_call_ref(RpcCall *call) {
        atomic_fetch_add(&call->refs, 1);
        return call;
}

void rpc_call_unref(RpcCall *call) {
        if (!call || atomic_fetch_sub(&call->refs, 1) != 1)
                return;
        for (ArenaBlock *b = call->arena, *next; b; b = next) {
                next = b->next;
                free(b);
        }
        free(call);
}

/* Every caller is the plaintext development-mode caller: every role, no
 * certificate (the server checks the roles before a handler runs). */
const RpcIdentity *rpc_call_identity(RpcCall *call) {
        static const RpcIdentity dev = { .name = "dev-mode", .roles = RPC_ROLES_ALL, .dev_mode = true };
        (void) call;
        return &dev;
}

int rpc_call_peer_cert_pem(RpcCall *call, char **ret) {
        (void) call;
        *ret = NULL;
        return -ENOENT;
}

bool rpc_call_cancelled(RpcCall *call) {
        (void) call;
        return false;
}

int64_t rpc_call_remaining_ms(RpcCall *call) {
        (void) call;
        return 60000;
}

const char *rpc_call_method(RpcCall *call) {
        return call->md ? call->md->name : "";
}

const char *rpc_call_metadata(RpcCall *call, const char *key, size_t *ret_len) {
        (void) call;
        (void) key;
        if (ret_len)
                *ret_len = 0;
        return NULL;
}

void rpc_call_peer(RpcCall *call, char *buf, size_t size) {
        (void) call;
        snprintf(buf, size, "unix:fuzz");
}

/* ---- the agent --------------------------------------------------------- */

/* g1's kernel is an empty file in the image root (guests are confined to
 * the roots: agent-files.c); QEMU is /bin/false, so nothing reads it. */
static char guest_json[512], image_root[256];

static char state_dir[256], run_dir[256];

static Agent *agent_up(void) {
        AgentConfig cfg;
        Agent *a;
        agent_config_defaults(&cfg);
        snprintf(cfg.host, sizeof(cfg.host), "fuzz-host");
        snprintf(cfg.state_dir, sizeof(cfg.state_dir), "%s", state_dir);
        snprintf(cfg.run_dir, sizeof(cfg.run_dir), "%s", run_dir);
        cfg.n_image_roots = 1;
        snprintf(cfg.image_roots[0], sizeof(cfg.image_roots[0]), "%s", image_root);
        snprintf(cfg.qemu_binary, sizeof(cfg.qemu_binary), "/bin/false");
        snprintf(cfg.accel, sizeof(cfg.accel), "tcg");
        cfg.dev_mode = true;
        cfg.job_timeout_ms = cfg.qmp_timeout_ms = cfg.qga_timeout_ms = cfg.start_timeout_ms = 200;
        cfg.finish_ask_ms = 200;
        if (agent_new(&cfg, &a) < 0)
                abort();
        Vm *vm = NULL;
        if (agent_vm_define(a, guest_json, strlen(guest_json), "fuzz-define", &vm) < 0) {
                fprintf(stderr, "fuzz-agent-rpc: define g1: %s\n", err_msg());
                abort();
        }
        vm_unref(vm);
        err_clear();
        return a;
}

static void agent_down(Agent *a) {
        Deadline d = deadline_in_ms(10000);
        while (atomic_load(&a->background) > 0) {
                if (deadline_expired(d)) {
                        fprintf(stderr, "fuzz-agent-rpc: %d agent threads still run 10 s after the call\n",
                                atomic_load(&a->background));
                        abort();
                }
                sleep_ms(1);
        }
        atomic_store(&a->stopping, true);
        agent_free(a);
        fuzz_empty_dir(state_dir);
        fuzz_empty_dir(run_dir);
}

static void setup(void) {
        const char *base = "/dev/shm";
        char dir[64];
        struct stat st;
        fuzz_init();
        /* fsyncs are free on tmpfs; run_dir must stay short (agent-config.h) */
        if (stat(base, &st) == 0 && S_ISDIR(st.st_mode)) {
                snprintf(dir, sizeof(dir), "%s/drover-fuzz-XXXXXX", base);
                if (!mkdtemp(dir))
                        abort();
        } else
                snprintf(dir, sizeof(dir), "%s", fuzz_tmpdir());
        snprintf(state_dir, sizeof(state_dir), "%s/state", dir);
        snprintf(run_dir, sizeof(run_dir), "%s/run", dir);
        snprintf(image_root, sizeof(image_root), "%s/images", dir);
        char kernel[300];
        snprintf(kernel, sizeof(kernel), "%s/vmlinuz", image_root);
        int kfd = mkdir(image_root, 0755) == 0 ? open(kernel, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644) : -1;
        if (kfd < 0)
                abort();
        close(kfd);
        snprintf(guest_json, sizeof(guest_json),
                 "{\"name\": \"g1\", \"uuid\": \"8b5c1f0e-1a2b-4c3d-9e8f-0123456789ab\", \"memory_mib\": 64, "
                 "\"kernel\": \"%s\"}", kernel);
        /* the registration only records the table (rpc_server_add_service) */
        Agent *a = agent_up();
        if (agent_rpc_register(NULL, a) < 0 || !n_methods)
                abort();
        agent_down(a);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        static bool init;
        if (!init) {
                setup();
                init = true;
        }
        if (size < 1)
                return 0;
        const RpcMethodDef *def = &methods[data[0] % n_methods];
        const ProtobufCMethodDescriptor *md = protobuf_c_service_descriptor_get_method_by_name(service, def->name);
        if (!md)
                abort();
        ProtobufCMessage *req = protobuf_c_message_unpack(md->input, NULL, size - 1, data + 1);
        if (!req)
                return 0; /* the server answers INVALID_ARGUMENT without a handler */
        if (rpc_check_strings(req) < 0) {
                protobuf_c_message_free_unpacked(req, NULL);
                err_clear();
                return 0;
        }

        Agent *a = agent_up();
        RpcCall *call = calloc(1, sizeof(*call));
        if (!call)
                abort();
        atomic_init(&call->refs, 1);
        call->md = md;
        if (def->unary) {
                ProtobufCMessage *resp = rpc_call_alloc(call, md->output->sizeof_message);
                protobuf_c_message_init(md->output, resp);
                if (def->unary(call, req, resp, a) == RPC_OK)
                        (void) rpc_call_send(call, resp);
        } else
                (void) def->stream(call, req, a);
        protobuf_c_message_free_unpacked(req, NULL);
        agent_down(a);
        rpc_call_unref(call);
        err_clear();
        return 0;
}

/* Run drover-agent as a real process for tests: start it (dev mode, a unix
 * socket and a loopback TCP port), wait for its ready line, talk to it over
 * real gRPC, kill it, and kill the guests it left behind when the test ends
 * (they outlive the agent on purpose, so the test cleans them up itself). */
#pragma once

#include <stdbool.h>
#include <sys/types.h>

#include "agent.pb-c.h"
#include "rpcclient.h"

typedef struct TestAgent {
        pid_t pid;
        char dir[256];
        char state_dir[300];
        char run_dir[300];
        char sock[300];
        char log[300];
        int port;
        RpcClient *cl;     /* over the unix socket */
} TestAgent;

/* Start an agent using @dir for its folders; @extra_env "NAME=VALUE" or NULL. */
int test_agent_start(TestAgent *t, const char *dir, const char *extra_env);

/* How test_agent_start_opts() runs the agent (every member optional). */
typedef struct TestAgentOptions {
        const char *config;    /* --config FILE instead of the development options; the
                                * file must use @dir/state, @dir/run, unix:@dir/agent.sock */
        const char *netns;     /* run it as `ip netns exec NETNS drover-agent ...` */
        const RpcTls *tls;     /* the test's client credentials for the unix socket
                                * (server name "localhost"); NULL = plaintext */
        const char *extra_env; /* "NAME=VALUE" for the agent only */
        bool keep_log;         /* append to @dir/agent.log instead of truncating it */
} TestAgentOptions;

/* test_agent_start() with options; t->port is 0 with a config file (the
 * file's listen list decides).  The old log is kept when asked, so a
 * restarted agent's log follows its predecessor's. */
int test_agent_start_opts(TestAgent *t, const char *dir, const TestAgentOptions *o);
/* SIGKILL the agent (guests keep running). */
void test_agent_kill9(TestAgent *t);
/* SIGTERM and wait; returns the exit status. */
int test_agent_stop(TestAgent *t);
/* Kill every QEMU whose pidfile is in the run folder (test cleanup). */
void test_agent_kill_guests(TestAgent *t);

/* The image roots (agent-config.h) of a test agent using @dir, joined by
 * @sep ("," for --set, "\", \"" inside a JSON array): the test guest's
 * folder ($DROVER_GUEST_ELF's), the Linux guest's ($DROVER_LINUX_GUEST_DIR)
 * when set, @dir itself (for the disks and files tests make there), and
 * $DROVER_TEST_IMAGE_ROOT when the test sets it (a folder every agent may
 * use: images at the same path on several hosts). */
void test_image_roots(const char *dir, const char *sep, char *buf, size_t size);

/* A definition of the tiny test guest. */
char *test_guest_json(const char *name, const char *uuid, int mem_mib, const char *append);

/* The real Linux guest of tests/linux-guest (Debian kernel, busybox,
 * qemu-ga inside), for tests of the guest-agent paths. */
typedef struct TestLinuxGuest {
        char kernel[512];  /* OUTDIR/vmlinux */
        char initrd[512];  /* OUTDIR/initrd.cpio.gz */
        double build_ms;   /* wall time of build-linux-guest.sh (~0.1 s when cached) */
        char summary[256]; /* its last output line */
} TestLinuxGuest;

/* Kernel command line that boots it quickly under TCG. */
#define TEST_LINUX_GUEST_APPEND                                                                      \
        "console=ttyS0 quiet mitigations=off tsc=reliable no_timer_check cryptomgr.notests "          \
        "random.trust_cpu=on i8042.nokbd i8042.noaux"

/* Run $DROVER_LINUX_GUEST_SCRIPT $DROVER_LINUX_GUEST_DIR (set by meson)
 * under timeout(1) with @timeout_s; it builds the guest or finds it cached.
 * Skips the test (tu_skip) with the reason when the guest cannot be built
 * here (variables unset, packages unavailable, too slow); exits 1 with the
 * script's log on any other failure. */
void test_linux_guest_build(TestLinuxGuest *ret, int timeout_s);
/* Its definition: @mem_mib, one vCPU, "guest_agent": true, serial log. */
char *test_linux_guest_json(const char *name, const TestLinuxGuest *lg, int mem_mib);
/* The same with @append_extra added to the kernel command line (e.g.
 * "drover.disklog=1", tests/linux-guest/README.md) and @disks_json as its
 * "disks" member (a JSON array); either may be NULL.  Free the result. */
char *test_linux_guest_json_ex(const char *name, const TestLinuxGuest *lg, int mem_mib, const char *append_extra,
                               const char *disks_json);
/* Define it as @name on @t's agent (Define RPC).  0 when the agent took it
 * and reports its guest agent configured; -1 otherwise, with the reason on
 * stderr (for a cmocka group setup). */
int test_linux_guest_define(TestAgent *t, const char *name, const TestLinuxGuest *lg, int mem_mib);

/* Define the tiny test guest @name (test_guest_json(@name, NULL, @mem_mib,
 * @append)) on @t's agent and start it.  Its QEMU pid once the guest runs;
 * -1 otherwise, with the reason on stderr. */
int test_guest_define_start(TestAgent *t, const char *name, int mem_mib, const char *append);

/* Unary call helper: return 0 or -errno, status in *st.  For the calls that
 * answer with an operation (Start, Shutdown, Guest*), waits for it on the
 * client side and returns what the blocking call used to (agent_op_call in
 * agent/agent-opwait.h); a test of the immediate answer calls
 * rpc_client_unary() on t->cl itself. */
int ta_call(TestAgent *t, const char *method, const ProtobufCMessage *req, ProtobufCMessage **resp,
            RpcStatus *st);
/* Wait for operation @op_id on @t's agent (agent_op_wait). */
int ta_op_wait(TestAgent *t, const char *op_id, int64_t timeout_ms, Drover__V1__Operation **ret, RpcStatus *st);
/* Migrate with @req over @cl and, with @wait, wait for the migration on the
 * client side (agent_op_migrate): NULL on an RPC error (*st says which). */
Drover__V1__MigrationResult *ta_migrate(RpcClient *cl, const Drover__V1__MigrateRequest *req, bool wait,
                                        int64_t timeout_ms, RpcStatus *st);

/* libFuzzer harness: droverctl against a hostile coordinator.
 *
 * droverctl's printers (hosts, vms, jobs, job, cancel, watch, the plan and
 * job of a submitted request; text, JSON and the terminal redraw) fetch
 * their input through the RPC client, so this harness links droverctl's
 * files but its main() (droverctl-rpc.c, -show.c, -watch.c) and stands in
 * for the RPC client (rpcclient.h): a reply is the fuzz input unpacked with
 * protobuf-c as the method's output type, as the real client does with the
 * bytes off the wire, and a stream is a run of such replies.
 * libdrover-rpc is not linked: these stand-ins are the client.
 *
 * Input: byte 0 picks the command (bits 0-2), --json (bit 3), --wait
 * (bit 4: a submitted job is then watched); the rest is the reply, or for
 * a stream a run of [length: 2 bytes, big endian][message] records.
 * stdout is a pseudo-terminal 60 columns by 12 rows whose output a
 * thread throws away, so the terminal redraw (cut to the width, capped to
 * the height) runs too.  Nothing is kept between runs: the options are
 * reset before each.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "droverctl.h"
#include "err.h"
#include "fuzz-util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void *drain_main(void *arg) {
        int fd = (int) (intptr_t) arg;
        char buf[4096];
        while (read(fd, buf, sizeof(buf)) > 0 || errno == EINTR)
                ;
        return NULL;
}

/* stdout becomes a small terminal nobody reads but the drain thread. */
static void stdout_to_pty(void) {
        int master = posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC);
        pthread_t th;
        if (master < 0 || grantpt(master) < 0 || unlockpt(master) < 0)
                abort();
        int slave = open(ptsname(master), O_RDWR | O_NOCTTY | O_CLOEXEC);
        struct winsize ws = { .ws_row = 12, .ws_col = 60 };
        if (slave < 0 || ioctl(slave, TIOCSWINSZ, &ws) < 0 || dup2(slave, STDOUT_FILENO) < 0 ||
            pthread_create(&th, NULL, drain_main, (void *) (intptr_t) master) != 0)
                abort();
        pthread_detach(th);
        close(slave);
}

static const uint8_t *reply;
static size_t reply_len;

struct RpcClient {
        int unused;
};
struct RpcStream {
        const uint8_t *p;
        size_t left;
        const ProtobufCMessageDescriptor *out;
};

int rpc_client_new(const char *target, const RpcClientOptions *opts, RpcClient **ret_cl) {
        (void) target;
        (void) opts;
        *ret_cl = calloc(1, sizeof(RpcClient));
        return *ret_cl ? 0 : -ENOMEM;
}

void rpc_client_free(RpcClient *c) {
        free(c);
}

static const ProtobufCMessageDescriptor *output_of(const ProtobufCServiceDescriptor *svc, const char *method) {
        const ProtobufCMethodDescriptor *md = protobuf_c_service_descriptor_get_method_by_name(svc, method);
        if (!md)
                abort(); /* droverctl names a method the service lacks: a harness or product bug */
        return md->output;
}

int rpc_client_unary(RpcClient *c, const ProtobufCServiceDescriptor *svc, const char *method,
                     const ProtobufCMessage *req, int64_t timeout_ms, ProtobufCMessage **ret_resp,
                     RpcStatus *ret_status) {
        (void) c;
        (void) req;
        (void) timeout_ms;
        if (ret_status)
                memset(ret_status, 0, sizeof(*ret_status));
        ProtobufCMessage *m = protobuf_c_message_unpack(output_of(svc, method), NULL, reply_len, reply);
        if (!m)
                return err_set(-EBADMSG, "%s: reply does not parse", method);
        *ret_resp = m;
        return 0;
}

int rpc_stream_open(RpcClient *c, const ProtobufCServiceDescriptor *svc, const char *method,
                    const ProtobufCMessage *req, int64_t timeout_ms, RpcStream **ret_stream) {
        (void) c;
        (void) req;
        (void) timeout_ms;
        RpcStream *st = calloc(1, sizeof(*st));
        if (!st)
                return -ENOMEM;
        st->p = reply;
        st->left = reply_len;
        st->out = output_of(svc, method);
        *ret_stream = st;
        return 0;
}

int rpc_stream_read(RpcStream *st, ProtobufCMessage **ret_msg) {
        if (st->left < 2)
                return 0;
        size_t len = (size_t) st->p[0] << 8 | st->p[1];
        st->p += 2;
        st->left -= 2;
        if (len > st->left)
                len = st->left;
        ProtobufCMessage *m = protobuf_c_message_unpack(st->out, NULL, len, st->p);
        st->p += len;
        st->left -= len;
        if (!m)
                return err_set(-EBADMSG, "stream message does not parse");
        *ret_msg = m;
        return 1;
}

void rpc_stream_free(RpcStream *st) {
        free(st);
}

void rpc_stream_cancel(RpcStream *st) {
        st->left = 0;
}

const RpcStatus *rpc_stream_status(RpcStream *st) {
        (void) st;
        return NULL;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        static bool init;
        if (!init) {
                fuzz_init();
                stdout_to_pty();
                init = true;
        }
        if (size < 1)
                return 0;
        memset(&dctl_opt, 0, sizeof(dctl_opt));
        dctl_opt.target = "unix:/fuzz";
        dctl_opt.timeout_ms = 30000;
        dctl_opt.json = data[0] & 0x08;
        dctl_opt.wait = data[0] & 0x10;
        reply = data + 1;
        reply_len = size - 1;
        if (dctl_connect() != 0)
                return 0;
        char *guests[] = { (char *) "g1", (char *) "g2" }, *job[] = { (char *) "job-1" };
        switch (data[0] & 7) {
        case 0: (void) dctl_cmd_hosts(0, NULL); break;
        case 1: (void) dctl_cmd_vms(0, NULL); break;
        case 2: (void) dctl_cmd_jobs(0, NULL); break;
        case 3: (void) dctl_cmd_job(1, job); break;
        case 4: (void) dctl_cmd_cancel(1, job); break;
        case 5: (void) dctl_watch("job-1"); break;
        case 6: (void) dctl_cmd_migrate(2, guests); break;
        default: {
                /* the terminal redraw of one watched job */
                Drover__V1__Job *j = drover__v1__job__unpack(NULL, reply_len, reply);
                if (j) {
                        (void) dctl_render_live(j, 3);
                        (void) dctl_render_live(j, 0);
                        drover__v1__job__free_unpacked(j, NULL);
                }
        }
        }
        dctl_disconnect();
        err_clear();
        return 0;
}

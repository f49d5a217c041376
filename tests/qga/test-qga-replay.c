/* Replay tests for core/qga.c against a fake guest agent (fake-agent.h).
 *
 * The first two tests serve libvirt's qemuagenttest cases
 * (tests/data/qga/exchanges.json) and assert what libvirt asserts where it
 * applies to our calls.  The rest script the stream faults real qemu-ga
 * cannot produce on cue: stale replies before the sync, garbage, oversized
 * replies, EOF mid-reply, late replies after a timeout, late or missing sync
 * replies, disabled commands, and a second caller while a command is in
 * flight.  Each test checks the fake saw exactly the requests it should
 * (right arguments, every sync preceded by 0xFF, no step left over).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <json-c/json.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "qga-assert.h"

#include "deadline.h"
#include "fake-agent.h"
#include "lock.h"
#include "qga-priv.h"
#include "qga.h"
#include "testutil.h"
#include "text.h"

/* What the fake's default guest-info lists as enabled. */
#define FAKE_ENABLED                                                                                 \
        "guest-sync-delimited,guest-sync,guest-ping,guest-info,guest-get-time,guest-set-time,"      \
        "guest-network-get-interfaces,guest-fsfreeze-freeze,guest-fsfreeze-freeze-list,"            \
        "guest-fsfreeze-thaw,guest-fstrim,guest-get-fsinfo,guest-suspend-ram,guest-suspend-disk,"   \
        "guest-suspend-hybrid,guest-shutdown,guest-get-vcpus,guest-set-vcpus,guest-get-users,"      \
        "guest-get-osinfo,guest-get-timezone"

/* qemu-ga 7.2.22's answer to the 0xFF we send before every sync. */
#define PARSE_ERROR_LINE "{\"error\": {\"class\": \"GenericError\", \"desc\": \"JSON parse error, stray '\\uFFFD'\"}}\n"

static const char *tmp;
static int sock_seq;

typedef struct Fx {
        char sock[512];
        FakeAgent *fake;
        QgaAgent *qga;
} Fx;

static int group_setup(void **state) {
        tmp = tu_tmpdir("qga-replay");
        return 0;
}

static int setup(void **state) {
        Fx *fx = calloc(1, sizeof(*fx));
        assert_non_null(fx);
        snprintf(fx->sock, sizeof(fx->sock), "%s/qga-%d.sock", tmp, sock_seq++);
        fx->fake = fake_new(fx->sock, FAKE_ENABLED);
        assert_int_equal(qga_new(fx->sock, &fx->qga), 0);
        *state = fx;
        return 0;
}

static int teardown(void **state) {
        Fx *fx = *state;
        qga_free(fx->qga);
        fake_free(fx->fake);
        free(fx);
        return 0;
}

/* The fake saw nothing unexpected, every step was used, every sync was
 * preceded by a 0xFF. */
static void assert_fake_clean(Fx *fx) {
        FakeStats st;
        fake_stats(fx->fake, &st);
        if (st.errors)
                print_error("fake agent: %d error(s), first: %s\n", st.errors, st.first_error);
        assert_int_equal(st.errors, 0);
        assert_int_equal(st.steps_left, 0);
        assert_int_equal(st.syncs_without_ff, 0);
}

static void assert_json_text_equal(const char *got, json_object *want) {
        json_object *g = json_tokener_parse(got);
        bool eq = g && json_object_equal(g, want);
        if (!eq)
                print_error("got %s, expected %s\n", got, json_object_to_json_string(want));
        json_object_put(g);
        assert_true(eq);
}

static json_object *load_corpus(void) {
        char *text = tu_read_file(tu_source_path("tests/data/qga/exchanges.json"), NULL);
        json_object *o;
        assert_non_null(text);
        o = json_tokener_parse(text);
        free(text);
        assert_non_null(o);
        return o;
}

static json_object *corpus_case(json_object *corpus, const char *name) {
        json_object *cases;
        assert_true(json_object_object_get_ex(corpus, "cases", &cases));
        for (size_t i = 0; i < json_object_array_length(cases); i++) {
                json_object *c = json_object_array_get_idx(cases, i), *t;
                if (json_object_object_get_ex(c, "test", &t) && strcmp(json_object_get_string(t), name) == 0)
                        return c;
        }
        fail_msg("corpus case %s missing", name);
        return NULL;
}

static char *line_of(json_object *o) {
        char *s = NULL;
        assert_true(asprintf(&s, "%s\n", json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN)) > 0);
        return s;
}

/* One client call for a corpus case, with the fake scripted from it. */
static void replay_one(Fx *fx, const char *test, const char *cmd, json_object *args, json_object *reply) {
        const char *args_text = args ? json_object_to_json_string_ext(args, JSON_C_TO_STRING_PLAIN) : NULL;
        char *reply_line = reply ? line_of(reply) : NULL;
        json_object *ret, *e;
        char *out = NULL;
        int r;

        fake_push(fx->fake, &(FakeStep){ .command = cmd, .args = args_text, .reply = reply_line });
        r = qga_call(fx->qga, cmd, args_text, reply ? -1 : 200, &out);
        print_message("  %-16s %-28s -> %d %.100s\n", test, cmd, r, r < 0 ? err_msg() : out);
        if (!reply) {
                /* libvirt: a command that never answers must time out, not hang. */
                assert_rc(r, -ETIMEDOUT);
                assert_detail_has(cmd);
        } else if (json_object_object_get_ex(reply, "return", &ret)) {
                assert_rc(r, 0);
                assert_json_text_equal(out, ret);
        } else {
                assert_true(json_object_object_get_ex(reply, "error", &e));
                json_object *cls = NULL;
                if (json_object_is_type(e, json_type_object))
                        json_object_object_get_ex(e, "class", &cls);
                if (cls && (strcmp(json_object_get_string(cls), "CommandDisabled") == 0 ||
                            strcmp(json_object_get_string(cls), "CommandNotFound") == 0)) {
                        assert_rc(r, -EOPNOTSUPP);
                        assert_detail_has("unsupported");
                        assert_detail_has(cmd);
                } else {
                        assert_rc(r, -EREMOTEIO);
                        assert_detail_has(cmd);
                        if (json_object_is_type(e, json_type_string)) /* CPU#4's bare string */
                                assert_detail_has(json_object_get_string(e));
                }
        }
        free(out);
        free(reply_line);
}

/* Every libvirt case through qga_call(): results equal to the canned
 * "return", errors mapped to -EOPNOTSUPP / -EREMOTEIO, unanswered commands
 * time out; the arguments the client sent match libvirt's expectations. */
static void test_corpus_generic(void **state) {
        Fx *fx = *state;
        json_object *corpus = load_corpus(), *cases;
        size_t n_cases, n_calls = 0;

        assert_true(json_object_object_get_ex(corpus, "cases", &cases));
        n_cases = json_object_array_length(cases);
        assert_int_equal(n_cases, 24);
        for (size_t i = 0; i < n_cases; i++) {
                json_object *c = json_object_array_get_idx(cases, i), *t, *cmd, *reply = NULL, *args = NULL, *list;
                const char *test;

                assert_true(json_object_object_get_ex(c, "test", &t));
                test = json_object_get_string(t);
                json_object_object_get_ex(c, "reply", &reply);
                if (json_object_object_get_ex(c, "commands_in_order", &list)) {
                        for (size_t k = 0; k < json_object_array_length(list); k++, n_calls++)
                                replay_one(fx, test, json_object_get_string(json_object_array_get_idx(list, k)),
                                           NULL, reply);
                        continue;
                }
                assert_true(json_object_object_get_ex(c, "command", &cmd));
                if (!json_object_object_get_ex(c, "args_from_client", &args))
                        json_object_object_get_ex(c, "expected_args", &args);
                if (json_object_is_type(args, json_type_array)) {
                        /* Shutdown#1-3: one call per argument set. */
                        for (size_t k = 0; k < json_object_array_length(args); k++, n_calls++)
                                replay_one(fx, test, json_object_get_string(cmd),
                                           json_object_array_get_idx(args, k), reply);
                        continue;
                }
                replay_one(fx, test, json_object_get_string(cmd), args, reply);
                n_calls++;
        }
        /* 24 cases; Suspend and Shutdown#1-3 make three calls each. */
        assert_int_equal(n_calls, 28);

        /* Specific libvirt assertions that the equality above already
         * implies, spelled out. */
        char *out = NULL;
        json_object *arb = corpus_case(corpus, "ArbitraryCommand"), *rep;
        assert_true(json_object_object_get_ex(arb, "reply", &rep));
        fake_push(fx->fake, &(FakeStep){ .command = "ble", .reply = "{\"return\":\"bla\"}\n" });
        assert_rc(qga_call(fx->qga, "ble", NULL, -1, &out), 0);
        assert_string_equal(out, "\"bla\"");
        free(out);

        json_object *os = corpus_case(corpus, "OSInfo#2");
        assert_true(json_object_object_get_ex(os, "reply", &rep));
        char *line = line_of(rep);
        fake_expect(fx->fake, "guest-get-osinfo", NULL, line);
        free(line);
        assert_rc(qga_call(fx->qga, "guest-get-osinfo", NULL, -1, &out), 0);
        json_object *o = json_tokener_parse(out), *v;
        assert_int_equal(json_object_object_length(o), 10);
        assert_true(json_object_object_get_ex(o, "version-id", &v));
        assert_string_equal(json_object_get_string(v), ""); /* the empty string is kept */
        json_object_put(o);
        free(out);

        json_object_put(corpus);
        assert_fake_clean(fx);
}

/* libvirt's GetInterfaces case through qga_network_get_interfaces(): four
 * interfaces eth2, eth1, eth0, lo; the alias eth1:0 merged into eth1 with
 * its addresses first; eth2 without addresses. */
static void test_corpus_interfaces(void **state) {
        Fx *fx = *state;
        json_object *corpus = load_corpus(), *rep;
        QgaInterface *ifs = NULL;
        size_t n = 0;

        assert_true(json_object_object_get_ex(corpus_case(corpus, "GetInterfaces"), "reply", &rep));
        char *line = line_of(rep);
        fake_expect(fx->fake, "guest-network-get-interfaces", NULL, line);
        free(line);
        assert_rc(qga_network_get_interfaces(fx->qga, -1, &ifs, &n), 0);
        assert_int_equal(n, 4);
        assert_string_equal(ifs[0].name, "eth2");
        assert_string_equal(ifs[0].hwaddr, "52:54:00:36:2a:e5");
        assert_int_equal(ifs[0].n_addrs, 0);
        assert_string_equal(ifs[1].name, "eth1");
        assert_string_equal(ifs[1].hwaddr, "52:54:00:d3:39:ee");
        assert_int_equal(ifs[1].n_addrs, 4);
        assert_string_equal(ifs[1].addrs[0], "192.168.10.91/24");
        assert_string_equal(ifs[1].addrs[1], "fe80::fc54:ff:fefe:4c4f/64");
        assert_string_equal(ifs[1].addrs[2], "192.168.103.83/32");
        assert_string_equal(ifs[1].addrs[3], "fe80::5054:ff:fed3:39ee/64");
        assert_string_equal(ifs[2].name, "eth0");
        assert_int_equal(ifs[2].n_addrs, 4);
        assert_string_equal(ifs[2].addrs[2], "192.168.234.152/16");
        assert_string_equal(ifs[3].name, "lo");
        assert_int_equal(ifs[3].n_addrs, 2);
        assert_string_equal(ifs[3].addrs[0], "127.0.0.1/8");
        assert_string_equal(ifs[3].addrs[1], "::1/128");
        qga_interfaces_free(ifs, n);

        /* An entry without a name is a malformed reply, not a crash. */
        ifs = NULL;
        fake_expect(fx->fake, "guest-network-get-interfaces", NULL,
                    "{\"return\": [{\"hardware-address\": \"52:54:00:00:00:01\"}]}\n");
        assert_rc(qga_network_get_interfaces(fx->qga, -1, &ifs, &n), -EPROTO);
        assert_null(ifs);
        json_object_put(corpus);
        assert_fake_clean(fx);
}

/* First call: 0xFF before the sync, the provoked parse error skipped, the
 * 0xFF-prefixed reply matched, guest-info probed once.  Later calls do not
 * resync. */
static void test_sync_handshake(void **state) {
        Fx *fx = *state;
        QgaCounters c;
        FakeStats st;
        const QgaInfo *info;

        assert_false(qga_supports(fx->qga, "guest-ping")); /* not probed yet */
        fake_expect(fx->fake, "guest-ping", NULL, "{\"return\": {}}\n");
        assert_rc(qga_ping(fx->qga, -1), 0);
        qga_get_counters(fx->qga, &c);
        assert_int_equal(c.connects, 1);
        assert_int_equal(c.syncs, 1);
        assert_int_equal(c.probes, 1);
        /* Exactly the parse error our 0xFF provoked was dropped. */
        assert_int_equal(c.stale_lines, 1);
        assert_int_equal(c.stale_bytes, strlen(PARSE_ERROR_LINE));
        fake_stats(fx->fake, &st);
        assert_int_equal(st.ff_bytes, 1);
        assert_int_equal(st.syncs, 1);
        assert_int_equal(st.sync_ids[0], c.last_sync_id);
        assert_true(c.last_sync_id <= (uint64_t) INT64_MAX);

        assert_rc(qga_info(fx->qga, -1, &info), 0);
        assert_string_equal(info->version, "fake-1.0");
        assert_int_equal(info->n_commands, 21);
        assert_true(qga_supports(fx->qga, "guest-ping"));
        assert_true(qga_supports(fx->qga, "guest-set-time"));
        assert_false(qga_supports(fx->qga, "guest-exec"));

        fake_expect(fx->fake, "guest-get-time", NULL, "{\"return\": 1700000000123456789}\n");
        int64_t t = 0;
        assert_rc(qga_get_time(fx->qga, -1, &t), 0);
        assert_true(t == INT64_C(1700000000123456789));
        qga_get_counters(fx->qga, &c);
        assert_int_equal(c.syncs, 1);
        assert_int_equal(c.probes, 1);
        fake_stats(fx->fake, &st);
        assert_int_equal(st.info_requests, 1);
        assert_int_equal(st.connections, 1);
        assert_fake_clean(fx);
}

/* Stale data before the sync reply: old replies, an older 0xFF-prefixed
 * sync reply with another id, and half a line cut by the real sentinel.
 * All dropped; the call gets its own answer. */
static void test_stale_before_sync(void **state) {
        Fx *fx = *state;
        static const char stale[] = "{\"return\": 4242}\n"
                                    "\xff{\"return\": 1}\n"
                                    "{\"return\": {\"vers";
        QgaCounters c;
        int64_t t = 0;

        fake_push_sync(fx->fake, &(FakeSync){ .prefix = stale });
        fake_expect(fx->fake, "guest-get-time", NULL, "{\"return\": 777}\n");
        assert_rc(qga_get_time(fx->qga, -1, &t), 0);
        assert_true(t == 777);
        qga_get_counters(fx->qga, &c);
        /* our parse error, {"return": 4242}, the stale sync reply */
        assert_int_equal(c.stale_lines, 3);
        assert_int_equal(c.syncs, 1);
        assert_fake_clean(fx);
}

/* A reply that is not JSON, or JSON without return/error: -EPROTO, and the
 * next call resyncs and gets its own answer. */
static void test_garbage_reply(void **state) {
        Fx *fx = *state;
        QgaCounters c;
        int64_t t = 0;

        fake_expect(fx->fake, "guest-ping", NULL, "this is not JSON\n");
        assert_rc(qga_ping(fx->qga, -1), -EPROTO);
        assert_detail_has("guest-ping");
        fake_expect(fx->fake, "guest-get-time", NULL, "{\"return\": 5}\n");
        assert_rc(qga_get_time(fx->qga, -1, &t), 0);
        assert_true(t == 5);

        fake_expect(fx->fake, "guest-ping", NULL, "{\"surprise\": 1}\n");
        assert_rc(qga_ping(fx->qga, -1), -EPROTO);
        assert_detail_has("neither");
        /* A reply of the wrong type for a typed call. */
        fake_expect(fx->fake, "guest-get-time", NULL, "{\"return\": \"noon\"}\n");
        assert_rc(qga_get_time(fx->qga, -1, &t), -EPROTO);
        fake_expect(fx->fake, "guest-get-time", NULL, "{\"return\": 6}\n");
        assert_rc(qga_get_time(fx->qga, -1, &t), 0);
        assert_true(t == 6);
        qga_get_counters(fx->qga, &c);
        assert_int_equal(c.syncs, 3); /* initial + one after each framing error */
        assert_int_equal(c.connects, 1);
        assert_fake_clean(fx);
}

static char *big_reply(size_t line_len) {
        /* {"return": "AAAA"}\n with the line (without \n) @line_len bytes */
        static const char head[] = "{\"return\": \"", tail[] = "\"}\n";
        size_t fill = line_len - (sizeof(head) - 1) - 2;
        char *s = malloc(line_len + 2);
        if (!s)
                abort();
        memcpy(s, head, sizeof(head) - 1);
        memset(s + sizeof(head) - 1, 'A', fill);
        memcpy(s + sizeof(head) - 1 + fill, tail, sizeof(tail));
        assert_int_equal(strlen(s), line_len + 1);
        return s;
}

/* A reply of exactly QGA_MESSAGE_MAX bytes is accepted; one byte more is
 * -EPROTO; an 11 MiB one too, and the next call resyncs past its tail. */
static void test_oversized_reply(void **state) {
        Fx *fx = *state;
        char *out = NULL, *r1 = big_reply(QGA_MESSAGE_MAX), *r2 = big_reply(QGA_MESSAGE_MAX + 1),
             *r3 = big_reply(11u * 1024 * 1024);
        QgaCounters c;
        int64_t t = 0;

        fake_expect(fx->fake, "guest-get-fsinfo", NULL, r1);
        assert_rc(qga_call(fx->qga, "guest-get-fsinfo", NULL, -1, &out), 0);
        assert_int_equal(strlen(out), QGA_MESSAGE_MAX - 14 + 2);
        free(out);

        fake_expect(fx->fake, "guest-get-fsinfo", NULL, r2);
        assert_rc(qga_call(fx->qga, "guest-get-fsinfo", NULL, -1, &out), -EPROTO);
        assert_detail_has("exceeds");
        fake_expect(fx->fake, "guest-get-fsinfo", NULL, r3);
        assert_rc(qga_call(fx->qga, "guest-get-fsinfo", NULL, -1, &out), -EPROTO);
        assert_detail_has("exceeds");

        /* A stream that never ends its line: cut at the cap, at once, not
         * buffered until the deadline. */
        size_t endless_len = 11u * 1024 * 1024;
        char *endless = malloc(endless_len);
        if (!endless)
                abort();
        memset(endless, 'B', endless_len);
        fake_push(fx->fake, &(FakeStep){ .command = "guest-get-fsinfo", .reply = endless, .reply_len = endless_len });
        free(endless);
        uint64_t t0 = now_ns();
        assert_rc(qga_call(fx->qga, "guest-get-fsinfo", NULL, 4000, &out), -EPROTO);
        assert_detail_has("exceeds");
        assert_true(now_ns() - t0 < 2000 * NSEC_PER_MSEC);

        fake_expect(fx->fake, "guest-get-time", NULL, "{\"return\": 99}\n");
        assert_rc(qga_get_time(fx->qga, -1, &t), 0);
        assert_true(t == 99);
        qga_get_counters(fx->qga, &c);
        assert_true(c.stale_bytes >= 22u * 1024 * 1024);
        assert_int_equal(c.connects, 1);
        free(r1);
        free(r2);
        free(r3);
        assert_fake_clean(fx);
}

/* The agent closes the socket half way through a reply: -ECONNRESET; the
 * next call reconnects and resyncs, and does not probe guest-info again
 * within QGA_INFO_REPROBE_MIN_MS of the first probe (the default bound). */
static void test_eof_mid_reply(void **state) {
        Fx *fx = *state;
        QgaCounters c;
        FakeStats st;
        int64_t t = 0;

        fake_push(fx->fake, &(FakeStep){ .command = "guest-get-time", .reply = "{\"return\": 12", .close_after = true });
        assert_rc(qga_get_time(fx->qga, -1, &t), -ECONNRESET);
        assert_detail_has("closed");
        fake_expect(fx->fake, "guest-get-time", NULL, "{\"return\": 34}\n");
        assert_rc(qga_get_time(fx->qga, -1, &t), 0);
        assert_true(t == 34);
        qga_get_counters(fx->qga, &c);
        fake_stats(fx->fake, &st);
        assert_int_equal(c.connects, 2);
        assert_int_equal(st.connections, 2);
        assert_int_equal(st.info_requests, 1);
        assert_int_equal(c.probes, 1);
        assert_fake_clean(fx);
}

/* The agent goes away between calls (guest reboot, agent restart): the next
 * call notices, reconnects and succeeds without surfacing an error. */
static void test_eof_while_idle(void **state) {
        Fx *fx = *state;
        QgaCounters c;
        int64_t t = 0;

        fake_push(fx->fake, &(FakeStep){ .command = "guest-ping", .reply = "{\"return\": {}}\n", .close_after = true });
        assert_rc(qga_ping(fx->qga, -1), 0);
        fake_wait_closed(fx->fake, 1); /* the agent is gone before the next call */
        fake_expect(fx->fake, "guest-get-time", NULL, "{\"return\": 56}\n");
        assert_rc(qga_get_time(fx->qga, -1, &t), 0);
        assert_true(t == 56);
        qga_get_counters(fx->qga, &c);
        assert_int_equal(c.connects, 2);
        assert_int_equal(c.syncs, 2);
        assert_fake_clean(fx);
}

/* A command times out; its late reply (same shape as the next answer)
 * arrives while the next call resyncs and is discarded: the next call gets
 * ITS answer. */
static void test_timeout_then_resync(void **state) {
        Fx *fx = *state;
        QgaCounters c0, c1;
        FakeStats st;
        int64_t t = 0;
        uint64_t t0, el;

        fake_expect(fx->fake, "guest-ping", NULL, "{\"return\": {}}\n");
        assert_rc(qga_ping(fx->qga, -1), 0);
        fake_push(fx->fake, &(FakeStep){ .command = "guest-get-time", .reply = "{\"return\": 111}\n", .delay_ms = 400 });
        t0 = now_ns();
        assert_rc(qga_get_time(fx->qga, 150, &t), -ETIMEDOUT);
        el = (now_ns() - t0) / NSEC_PER_MSEC;
        print_message("  timed out after %" PRIu64 " ms (deadline 150 ms)\n", el);
        assert_true(el >= 150 && el < 400);
        assert_detail_has("guest-get-time");
        assert_detail_has("150 ms");

        qga_get_counters(fx->qga, &c0);
        fake_expect(fx->fake, "guest-get-time", NULL, "{\"return\": 222}\n");
        assert_rc(qga_get_time(fx->qga, -1, &t), 0);
        assert_true(t == 222);
        qga_get_counters(fx->qga, &c1);
        assert_int_equal(c1.syncs - c0.syncs, 1);
        /* the late {"return": 111} and the parse error of our 0xFF */
        assert_int_equal(c1.stale_lines - c0.stale_lines, 2);
        fake_stats(fx->fake, &st);
        assert_int_equal(st.input_during_delay, 1); /* the resync, sent while 111 was pending */
        assert_fake_clean(fx);
}

/* The sync itself times out (answered late, then not at all): the command
 * is never sent; later calls resync with fresh ids and drop the late sync
 * reply. */
static void test_sync_timeout(void **state) {
        Fx *fx = *state;
        QgaCounters c;
        FakeStats st;

        fake_push_sync(fx->fake, &(FakeSync){ .delay_ms = 400 });
        assert_rc(qga_ping(fx->qga, 150), -ETIMEDOUT);
        assert_detail_has("guest-sync-delimited");
        fake_expect(fx->fake, "guest-ping", NULL, "{\"return\": {}}\n");
        assert_rc(qga_ping(fx->qga, -1), 0);

        fake_push_sync(fx->fake, &(FakeSync){ .no_reply = true });
        qga_disconnect(fx->qga); /* a fresh connection must sync again */
        assert_rc(qga_ping(fx->qga, 150), -ETIMEDOUT);
        assert_detail_has("guest-sync-delimited");
        fake_expect(fx->fake, "guest-ping", NULL, "{\"return\": {}}\n");
        assert_rc(qga_ping(fx->qga, -1), 0);

        fake_stats(fx->fake, &st);
        qga_get_counters(fx->qga, &c);
        assert_int_equal(st.syncs, 4);
        assert_int_equal(c.syncs, 2);
        assert_int_equal(st.commands, 2); /* no ping sent on an unsynced channel */
        for (int i = 0; i < st.syncs; i++) {
                assert_true(st.sync_ids[i] <= (uint64_t) INT64_MAX);
                for (int k = 0; k < i; k++)
                        assert_true(st.sync_ids[i] != st.sync_ids[k]);
        }
        assert_int_equal(st.sync_ids[3], c.last_sync_id);
        assert_fake_clean(fx);
}

/* guest-info lists a command as disabled: refused with -EOPNOTSUPP, the
 * command named, never sent.  The agent's own refusals (qemu-ga 7.2
 * CommandNotFound "... has been disabled", older agents' GenericError "...
 * has been disabled for this instance", unknown command) are -EOPNOTSUPP
 * too; other errors -EREMOTEIO with class and description. */
static void test_disabled_commands(void **state) {
        Fx *fx = *state;
        QgaCounters c0, c1;
        FakeStats st;
        char *out = NULL;

        fake_set_info(fx->fake,
                      "{\"version\": \"7.2.22\", \"supported_commands\": ["
                      "{\"enabled\": false, \"name\": \"guest-set-time\", \"success-response\": true},"
                      "{\"enabled\": true, \"name\": \"guest-ping\", \"success-response\": true},"
                      "{\"enabled\": true, \"name\": \"guest-get-users\", \"success-response\": true}]}");
        assert_rc(qga_set_time(fx->qga, -1, -1), -EOPNOTSUPP);
        assert_detail_has("guest-set-time");
        assert_detail_has("unsupported");
        qga_get_counters(fx->qga, &c0);
        assert_rc(qga_set_time(fx->qga, -1, 123), -EOPNOTSUPP); /* now refused without any I/O */
        qga_get_counters(fx->qga, &c1);
        assert_int_equal(c1.syncs, c0.syncs);
        assert_false(qga_supports(fx->qga, "guest-set-time"));
        assert_true(qga_supports(fx->qga, "guest-ping"));
        assert_false(qga_supports(fx->qga, "guest-no-such"));

        fake_expect(fx->fake, "guest-get-users", NULL,
                    "{\"error\": {\"class\": \"CommandNotFound\", \"desc\": \"Command guest-get-users has been disabled\"}}\n");
        assert_rc(qga_call(fx->qga, "guest-get-users", NULL, -1, &out), -EOPNOTSUPP);
        assert_detail_has("'guest-get-users' unsupported");
        fake_expect(fx->fake, "guest-get-disks", NULL,
                    "{\"error\": {\"class\": \"GenericError\", \"desc\": \"The command guest-get-disks has been disabled for this instance\"}}\n");
        assert_rc(qga_call(fx->qga, "guest-get-disks", NULL, -1, &out), -EOPNOTSUPP);
        assert_detail_has("guest-get-disks");
        fake_expect(fx->fake, "guest-nope", NULL,
                    "{\"error\": {\"class\": \"CommandNotFound\", \"desc\": \"The command guest-nope has not been found\"}}\n");
        assert_rc(qga_call(fx->qga, "guest-nope", NULL, -1, &out), -EOPNOTSUPP);
        assert_detail_has("guest-nope");

        fake_expect(fx->fake, "guest-ping", NULL,
                    "{\"error\": {\"class\": \"GenericError\", \"desc\": \"Parameter 'x' is unexpected\"}}\n");
        assert_rc(qga_ping(fx->qga, -1), -EREMOTEIO);
        assert_detail_has("GenericError");
        assert_detail_has("Parameter 'x' is unexpected");
        fake_expect(fx->fake, "guest-ping", NULL, "{\"error\": {}}\n");
        assert_rc(qga_ping(fx->qga, -1), -EREMOTEIO);
        assert_detail_has("(no class)");
        /* Guest text cannot inject lines into our logs. */
        fake_expect(fx->fake, "guest-ping", NULL,
                    "{\"error\": {\"class\": \"GenericError\", \"desc\": \"bad\\nERROR forged log line\"}}\n");
        assert_rc(qga_ping(fx->qga, -1), -EREMOTEIO);
        assert_null(strchr(err_msg(), '\n'));
        assert_detail_has("bad?ERROR");
        assert_null(out);
        fake_stats(fx->fake, &st);
        assert_int_equal(st.commands, 6); /* guest-set-time never reached the agent */
        assert_int_equal(st.syncs, 1);   /* agent errors are not framing errors */
        assert_fake_clean(fx);
}

/* guest-set-time arguments: a time in ns, or none (the guest reads its RTC). */
static void test_set_time_args(void **state) {
        Fx *fx = *state;
        fake_expect(fx->fake, "guest-set-time", "{\"time\": 1700000000000000000}", "{\"return\": {}}\n");
        assert_rc(qga_set_time(fx->qga, -1, INT64_C(1700000000000000000)), 0);
        fake_expect(fx->fake, "guest-set-time", NULL, "{\"return\": {}}\n");
        assert_rc(qga_set_time(fx->qga, -1, -1), 0);
        assert_fake_clean(fx);
}

/* An agent that refuses guest-info still serves other commands; qga_info
 * says why it has nothing.  The refusal is not final: the probe is tried
 * again on a later call, but never sooner than the re-probe interval after
 * the last one (not even across a reconnect), and what the agent says then
 * is published. */
static void test_info_refused_then_retried(void **state) {
        Fx *fx = *state;
        const QgaInfo *info = NULL;
        FakeStats st;
        uint64_t t_probe;

        qga_set_reprobe_interval_ms(fx->qga, 500);
        fake_set_info(fx->fake, NULL);
        fake_expect(fx->fake, "guest-ping", NULL, "{\"return\": {}}\n");
        t_probe = now_ns();
        assert_rc(qga_ping(fx->qga, -1), 0);
        assert_rc(qga_info(fx->qga, -1, &info), -EOPNOTSUPP);
        assert_detail_has("guest-info");
        assert_null(info);
        assert_false(qga_supports(fx->qga, "guest-ping"));

        /* The agent can answer now (it finished starting, or was fixed). */
        fake_set_info_list(fx->fake, "fake-1.1", "guest-ping,guest-info,guest-get-time", "guest-set-time");
        qga_disconnect(fx->qga);
        fake_expect(fx->fake, "guest-ping", NULL, "{\"return\": {}}\n");
        assert_rc(qga_ping(fx->qga, -1), 0);
        fake_stats(fx->fake, &st);
        if ((now_ns() - t_probe) / NSEC_PER_MSEC < 450) {
                assert_int_equal(st.info_requests, 1); /* the bound */
                assert_rc(qga_info(fx->qga, -1, &info), -EOPNOTSUPP);
        } else
                print_message("  (machine too slow to check the bound: %" PRIu64 " ms)\n",
                              (now_ns() - t_probe) / NSEC_PER_MSEC);

        sleep_ms(500);
        fake_expect(fx->fake, "guest-ping", NULL, "{\"return\": {}}\n"); /* qga_info's carrier */
        assert_rc(qga_info(fx->qga, -1, &info), 0);
        assert_string_equal(info->version, "fake-1.1");
        assert_true(qga_supports(fx->qga, "guest-get-time"));
        assert_false(qga_supports(fx->qga, "guest-set-time"));
        assert_rc(qga_set_time(fx->qga, -1, -1), -EOPNOTSUPP); /* refused without I/O */
        assert_detail_has("guest-info lists it as disabled");
        fake_stats(fx->fake, &st);
        assert_int_equal(st.connections, 2);
        assert_int_equal(st.info_requests, 2);
        assert_fake_clean(fx);
}

/* Guest text that is not UTF-8 (a hostile or broken guest) is repaired on
 * arrival: each invalid sequence becomes U+FFFD and is counted, and the
 * call succeeds; a guest's error text quoted in a detail is cut at a
 * character boundary.  Either way no text the channel hands over can make
 * a protobuf string invalid (ListGuests' guest_agent_error, an operation's
 * error, GuestInfo's version). */
static void test_invalid_utf8_from_the_guest_is_repaired(void **state) {
        Fx *fx = *state;
        const QgaInfo *info = NULL;
        QgaCounters cn;
        int64_t ns;

        /* (no 0xFF: from the agent it can only be the sync delimiter) */
        fake_set_info(fx->fake, "{\"version\": \"7.2\xfe\x80-host\xc3\", \"supported_commands\": ["
                                "{\"name\": \"guest-ping\", \"enabled\": true},"
                                "{\"name\": \"guest-info\", \"enabled\": true},"
                                "{\"name\": \"guest-get-time\", \"enabled\": true}]}");
        fake_expect(fx->fake, "guest-ping", NULL, "{\"return\": {}}\n"); /* qga_info's carrier */
        assert_rc(qga_info(fx->qga, -1, &info), 0);
        assert_string_equal(info->version, "7.2\xef\xbf\xbd-host\xef\xbf\xbd");
        assert_true(qga_supports(fx->qga, "guest-get-time"));
        qga_get_counters(fx->qga, &cn);
        assert_int_equal(cn.bad_utf8, 2);

        /* 150 two-byte characters: the quote in the detail is cut inside one */
        char reply[1024] = "{\"error\": {\"class\": \"GenericError\", \"desc\": \"";
        for (int i = 0; i < 150; i++)
                strcat(reply, "\xc3\xa9");
        strcat(reply, "\"}}\n");
        fake_expect(fx->fake, "guest-get-time", NULL, reply);
        assert_rc(qga_get_time(fx->qga, -1, &ns), -EREMOTEIO);
        assert_detail_has("\xc3\xa9\xc3\xa9");
        assert_true(text_utf8_valid(err_msg()));

        /* a reply that is not UTF-8 is still a reply: the call succeeds */
        fake_expect(fx->fake, "guest-get-time", NULL, "{\"return\": 1700000000000000000, \"x\": \"\x80\"}\n");
        assert_rc(qga_get_time(fx->qga, -1, &ns), 0);
        assert_int_equal(ns, INT64_C(1700000000000000000));
        qga_get_counters(fx->qga, &cn);
        assert_int_equal(cn.bad_utf8, 3);
        assert_int_equal(cn.syncs, 1); /* no framing error, no resync */
        assert_fake_clean(fx);
}

/* guest-set-time disabled in v1, enabled in v2. */
#define INFO_V1_ENABLED "guest-ping,guest-info,guest-get-time"
#define INFO_V2_ENABLED "guest-ping,guest-info,guest-get-time,guest-set-time"

/* The agent restarts as another version (it answers, then closes the
 * socket): the next call reconnects, probes guest-info again, and the new
 * command list decides; a command the old agent had disabled now goes
 * through. */
static void test_reprobe_after_restart(void **state) {
        Fx *fx = *state;
        const QgaInfo *info = NULL;
        FakeStats st;

        qga_set_reprobe_interval_ms(fx->qga, 0);
        fake_set_info_list(fx->fake, "fake-1.0", INFO_V1_ENABLED, "guest-set-time");
        fake_expect(fx->fake, "guest-ping", NULL, "{\"return\": {}}\n");
        assert_rc(qga_ping(fx->qga, -1), 0);
        assert_rc(qga_info(fx->qga, -1, &info), 0);
        assert_string_equal(info->version, "fake-1.0");
        assert_rc(qga_set_time(fx->qga, -1, -1), -EOPNOTSUPP);

        fake_set_info_list(fx->fake, "fake-2.0", INFO_V2_ENABLED, NULL);
        fake_push(fx->fake, &(FakeStep){ .command = "guest-ping", .reply = "{\"return\": {}}\n", .close_after = true });
        assert_rc(qga_ping(fx->qga, -1), 0);
        fake_wait_closed(fx->fake, 1); /* the old agent is gone before the next call */

        fake_expect(fx->fake, "guest-set-time", NULL, "{\"return\": {}}\n");
        assert_rc(qga_set_time(fx->qga, -1, -1), 0);
        assert_rc(qga_info(fx->qga, -1, &info), 0);
        assert_string_equal(info->version, "fake-2.0");
        assert_true(qga_supports(fx->qga, "guest-set-time"));
        fake_stats(fx->fake, &st);
        assert_int_equal(st.connections, 2);
        assert_int_equal(st.info_requests, 2);
        assert_fake_clean(fx);
}

/* The agent restarts behind a socket that stays open (virtio-serial: QEMU
 * holds the host end): the old agent never answers, the call times out,
 * and the resync that follows reaches the new agent, whose guest-info is
 * probed on the same connection. */
static void test_reprobe_after_resync(void **state) {
        Fx *fx = *state;
        const QgaInfo *info = NULL;
        QgaCounters c;
        FakeStats st;
        int64_t t = 0;

        qga_set_reprobe_interval_ms(fx->qga, 0);
        fake_set_info_list(fx->fake, "fake-1.0", INFO_V1_ENABLED, "guest-set-time");
        fake_expect(fx->fake, "guest-ping", NULL, "{\"return\": {}}\n");
        assert_rc(qga_ping(fx->qga, -1), 0);
        fake_push(fx->fake, &(FakeStep){ .command = "guest-get-time" }); /* no answer */
        assert_rc(qga_get_time(fx->qga, 200, &t), -ETIMEDOUT);

        fake_set_info_list(fx->fake, "fake-2.0", INFO_V2_ENABLED, NULL);
        fake_expect(fx->fake, "guest-set-time", NULL, "{\"return\": {}}\n");
        assert_rc(qga_set_time(fx->qga, -1, -1), 0);
        assert_rc(qga_info(fx->qga, -1, &info), 0);
        assert_string_equal(info->version, "fake-2.0");
        qga_get_counters(fx->qga, &c);
        assert_int_equal(c.connects, 1);
        assert_int_equal(c.syncs, 2);
        assert_int_equal(c.probes, 2);
        fake_stats(fx->fake, &st);
        assert_int_equal(st.info_requests, 2);
        assert_fake_clean(fx);
}

/* Bad arguments are refused before any I/O. */
static void test_invalid_args(void **state) {
        Fx *fx = *state;
        FakeStats st;
        char *out = NULL;

        assert_rc(qga_call(fx->qga, "guest-ping", "[1]", -1, &out), -EINVAL);
        assert_rc(qga_call(fx->qga, "guest-ping", "{bad", -1, &out), -EINVAL);
        assert_rc(qga_call(fx->qga, "", NULL, -1, &out), -EINVAL);
        assert_rc(qga_call(fx->qga, "guest-ping", "{\"s\": \"\xff\"}", -1, &out), -EINVAL);
        assert_null(out);
        sleep_ms(20);
        fake_stats(fx->fake, &st);
        assert_int_equal(st.connections, 0);
        assert_fake_clean(fx);
}

typedef struct Slow {
        QgaAgent *qga;
        int r;
        int64_t t;
        char detail[ERR_MSG_MAX];
} Slow;

static void *slow_get_time(void *p) {
        Slow *s = p;
        s->r = qga_get_time(s->qga, -1, &s->t);
        snprintf(s->detail, sizeof(s->detail), "%s", err_msg());
        return NULL;
}

/* One command in flight: a second caller waits on its own deadline and
 * its timeout names the command in flight; nothing is pipelined to the
 * agent.  qga_disconnect() during the call takes effect after it. */
static void test_one_in_flight(void **state) {
        Fx *fx = *state;
        pthread_t th;
        Slow s = { .qga = fx->qga };
        FakeStats st;
        LockStats ls[64];
        size_t n;
        bool found = false;
        uint64_t t0, el;

        fake_push(fx->fake, &(FakeStep){ .command = "guest-get-time", .reply = "{\"return\": 5}\n", .delay_ms = 400 });
        assert_int_equal(pthread_create(&th, NULL, slow_get_time, &s), 0);
        for (int i = 0; i < 200; i++) {
                fake_stats(fx->fake, &st);
                if (st.commands == 1)
                        break;
                sleep_ms(5);
        }
        assert_int_equal(st.commands, 1);
        t0 = now_ns();
        assert_rc(qga_ping(fx->qga, 100), -ETIMEDOUT);
        el = (now_ns() - t0) / NSEC_PER_MSEC;
        assert_true(el >= 100 && el < 400);
        assert_detail_has("'guest-get-time' in flight");
        qga_disconnect(fx->qga);
        pthread_join(th, NULL);
        if (s.r != 0)
                print_error("slow call: %d %s\n", s.r, s.detail);
        assert_int_equal(s.r, 0);
        assert_true(s.t == 5);

        fake_expect(fx->fake, "guest-ping", NULL, "{\"return\": {}}\n");
        assert_rc(qga_ping(fx->qga, -1), 0);
        fake_stats(fx->fake, &st);
        assert_int_equal(st.input_during_delay, 0);
        assert_int_equal(st.connections, 2); /* the deferred disconnect happened */

        n = lock_stats_snapshot(ls, 64);
        for (size_t i = 0; i < n && i < 64; i++)
                if (strcmp(ls[i].name, "qga") == 0) {
                        found = true;
                        assert_true(ls[i].count > 0);
                        /* The lock guards the slot, never the I/O. */
                        assert_true(ls[i].max_ns < 100 * NSEC_PER_MSEC);
                }
        assert_true(found);
        assert_fake_clean(fx);
}

/* Nothing there: clear errors naming the path. */
static void test_nothing_listening(void **state) {
        QgaAgent *a = NULL;
        char path[600], longp[200];
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        int fd;

        snprintf(path, sizeof(path), "%s/absent.sock", tmp);
        assert_rc(qga_new(path, &a), 0);
        assert_rc(qga_ping(a, -1), -ENOENT);
        assert_detail_has(path);
        qga_free(a);

        snprintf(path, sizeof(path), "%s/stale.sock", tmp);
        assert_true(strlen(path) < sizeof(sa.sun_path));
        memcpy(sa.sun_path, path, strlen(path) + 1);
        fd = socket(AF_UNIX, SOCK_STREAM, 0);
        assert_true(fd >= 0);
        assert_int_equal(bind(fd, (struct sockaddr *) &sa, sizeof(sa)), 0);
        close(fd); /* the file stays, nobody listens */
        assert_rc(qga_new(path, &a), 0);
        assert_rc(qga_ping(a, -1), -ECONNREFUSED);
        assert_detail_has("nothing listening");
        assert_detail_has(path);
        qga_free(a);

        memset(longp, 'x', sizeof(longp) - 1);
        longp[sizeof(longp) - 1] = '\0';
        a = NULL;
        assert_rc(qga_new(longp, &a), -ENAMETOOLONG);
        assert_null(a);
        qga_free(NULL);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test_setup_teardown(test_corpus_generic, setup, teardown),
                cmocka_unit_test_setup_teardown(test_corpus_interfaces, setup, teardown),
                cmocka_unit_test_setup_teardown(test_sync_handshake, setup, teardown),
                cmocka_unit_test_setup_teardown(test_stale_before_sync, setup, teardown),
                cmocka_unit_test_setup_teardown(test_garbage_reply, setup, teardown),
                cmocka_unit_test_setup_teardown(test_oversized_reply, setup, teardown),
                cmocka_unit_test_setup_teardown(test_eof_mid_reply, setup, teardown),
                cmocka_unit_test_setup_teardown(test_eof_while_idle, setup, teardown),
                cmocka_unit_test_setup_teardown(test_timeout_then_resync, setup, teardown),
                cmocka_unit_test_setup_teardown(test_sync_timeout, setup, teardown),
                cmocka_unit_test_setup_teardown(test_disabled_commands, setup, teardown),
                cmocka_unit_test_setup_teardown(test_set_time_args, setup, teardown),
                cmocka_unit_test_setup_teardown(test_invalid_utf8_from_the_guest_is_repaired, setup, teardown),
                cmocka_unit_test_setup_teardown(test_info_refused_then_retried, setup, teardown),
                cmocka_unit_test_setup_teardown(test_reprobe_after_restart, setup, teardown),
                cmocka_unit_test_setup_teardown(test_reprobe_after_resync, setup, teardown),
                cmocka_unit_test_setup_teardown(test_invalid_args, setup, teardown),
                cmocka_unit_test_setup_teardown(test_one_in_flight, setup, teardown),
                cmocka_unit_test(test_nothing_listening),
        };
        return cmocka_run_group_tests_name("qga-replay", tests, group_setup, NULL);
}

/* Replay of a real QEMU 7.2.22 migration session (both peers, every wire
 * message), tests/data/qmp/qmp-migration-session-simple.jsonl.
 *
 * Each peer becomes a fake QEMU serving its half of the recording: its
 * recorded greeting, then for every command the recorder sent, the command
 * is expected from Drover (name and arguments compared as JSON objects,
 * checked against the 7.2 schema) and answered with the recorded messages
 * that followed it (events byte for byte, replies with our id echoed).
 * Drover drives both monitors through its typed calls in the recorded
 * order, and each result is compared with the recorded reply; the events
 * each monitor delivered are compared with the recorded ones.
 *
 * A few recorded exchanges cannot come from a conforming client and are
 * skipped, each with its reason (skip_reason()); the test checks that
 * everything else in the file is served.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "err.h"
#include "qmp-priv.h"
#include "qmptest.h"

typedef struct Msg {
        int seq;
        bool src;      /* peer */
        bool to_qemu;  /* dir "->" */
        char *raw;
        json_object *obj; /* NULL when raw is not a whole JSON value */
} Msg;

typedef struct Peer {
        const char *name;
        FakeQemu *fake;
        const char *path;
        EvRec rec;
        QmpMonitor *m;
        json_object *events; /* expected, in order */
} Peer;

static Msg msgs[128];
static int n_msgs;

static const char *skip_reason(int seq) {
        switch (seq) {
        case 2:
        case 3:
                return "query-status before qmp_capabilities: Drover negotiates before any command";
        case 8:
        case 9:
                return "a second qmp_capabilities: Drover negotiates once, in connect";
        case 28:
        case 29:
        case 30:
                return "one command written in two pieces by the recorder: QEMU-side framing";
        case 31:
        case 32:
                return "a JSON array as a command: qmp_call() only sends objects";
        default:
                return NULL;
        }
}

/* Commands the recorder sent on purpose to have QEMU's input validation
 * reject them: the schema checker must reject them too. */
static bool schema_invalid(int seq) {
        return seq == 22 || seq == 24 || seq == 26;
}

static void load_session(void) {
        char *text = qt_data("qmp-migration-session-simple.jsonl");
        char *save = NULL;
        n_msgs = 0;
        for (char *line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
                json_object *o = json_tokener_parse(line), *v;
                Msg *m = &msgs[n_msgs++];
                assert_non_null(o);
                assert_true(n_msgs < (int) ELEMENTSOF(msgs));
                json_object_object_get_ex(o, "seq", &v);
                m->seq = json_object_get_int(v);
                json_object_object_get_ex(o, "peer", &v);
                m->src = strcmp(json_object_get_string(v), "src") == 0;
                json_object_object_get_ex(o, "dir", &v);
                m->to_qemu = strcmp(json_object_get_string(v), "->") == 0;
                json_object_object_get_ex(o, "raw", &v);
                m->raw = strdup(json_object_get_string(v));
                m->obj = json_tokener_parse(m->raw);
                json_object_put(o);
        }
        free(text);
        assert_int_equal(n_msgs, 81);
}

static void free_session(void) {
        for (int i = 0; i < n_msgs; i++) {
                free(msgs[i].raw);
                json_object_put(msgs[i].obj);
        }
}

static json_object *member(json_object *o, const char *key) {
        json_object *v = NULL;
        return o && json_object_object_get_ex(o, key, &v) ? v : NULL;
}

static const char *str_or(json_object *o, const char *key, const char *dflt) {
        json_object *v = member(o, key);
        return v ? json_object_get_string(v) : dflt;
}

static char *strip_crlf(const char *raw) {
        char *s = strdup(raw);
        size_t n = strlen(s);
        while (n > 0 && (s[n - 1] == '\n' || s[n - 1] == '\r'))
                s[--n] = '\0';
        return s;
}

/* Build the fake's transcript for one peer from the recording. */
static void build_peer(Peer *p, bool src) {
        bool greeted = false;
        p->fake = qt_fake(&p->path);
        evrec_init(&p->rec);
        p->events = json_object_new_array();
        for (int i = 0; i < n_msgs; i++) {
                Msg *m = &msgs[i];
                if (m->src != src || skip_reason(m->seq))
                        continue;
                assert_non_null(m->obj);
                if (!greeted) {
                        char *g = strip_crlf(m->raw);
                        assert_false(m->to_qemu);
                        assert_non_null(member(m->obj, "QMP"));
                        fake_set_greeting(p->fake, g);
                        free(g);
                        greeted = true;
                        continue;
                }
                if (m->to_qemu) {
                        json_object *args = member(m->obj, "arguments");
                        const char *exec = str_or(m->obj, "execute", "");
                        const char *a = args ? json_object_to_json_string(args) : NULL;
                        if (schema_invalid(m->seq))
                                fake_expect_invalid(p->fake, exec, a);
                        else
                                fake_expect(p->fake, exec, a);
                } else if (member(m->obj, "event")) {
                        fake_send(p->fake, m->raw, 0, false); /* byte for byte */
                        json_object_array_add(p->events, json_object_get(m->obj));
                } else {
                        fake_reply(p->fake, m->raw);
                }
        }
        /* QEMU exits after quit: the client sees EOF. */
        fake_close(p->fake);
        fake_start(p->fake);
}

static uint64_t u64_or0(json_object *o, const char *key) {
        json_object *v = member(o, key);
        return v ? (uint64_t) json_object_get_int64(v) : 0;
}

static void check_stats(const MigrationStats *s, json_object *ret) {
        json_object *ram = member(ret, "ram");
        const char *st = str_or(ret, "status", NULL);
        assert_int_equal(s->status, st ? migration_status_from_string(st) : MIGRATION_STATUS_NONE);
        assert_int_not_equal(s->status, MIGRATION_STATUS_UNKNOWN);
        assert_int_equal(s->total_time_ms, u64_or0(ret, "total-time"));
        assert_int_equal(s->downtime_ms, u64_or0(ret, "downtime"));
        assert_int_equal(s->expected_downtime_ms, u64_or0(ret, "expected-downtime"));
        assert_int_equal(s->setup_time_ms, u64_or0(ret, "setup-time"));
        assert_int_equal(s->cpu_throttle_percentage, u64_or0(ret, "cpu-throttle-percentage"));
        assert_int_equal(s->ram_transferred, u64_or0(ram, "transferred"));
        assert_int_equal(s->ram_remaining, u64_or0(ram, "remaining"));
        assert_int_equal(s->ram_total, u64_or0(ram, "total"));
        assert_int_equal(s->ram_duplicate, u64_or0(ram, "duplicate"));
        assert_int_equal(s->ram_normal, u64_or0(ram, "normal"));
        assert_int_equal(s->ram_normal_bytes, u64_or0(ram, "normal-bytes"));
        assert_int_equal(s->ram_dirty_pages_rate, u64_or0(ram, "dirty-pages-rate"));
        assert_int_equal(s->ram_page_size, u64_or0(ram, "page-size"));
        assert_int_equal(s->ram_dirty_sync_count, u64_or0(ram, "dirty-sync-count"));
        assert_int_equal(s->ram_postcopy_requests, u64_or0(ram, "postcopy-requests"));
        assert_true(fabs(s->ram_mbps - (member(ram, "mbps") ? json_object_get_double(member(ram, "mbps")) : 0)) < 1e-9);
        assert_int_equal(s->has_error_desc, member(ret, "error-desc") != NULL);
        if (s->has_error_desc)
                assert_string_equal(s->error_desc, str_or(ret, "error-desc", ""));
}

static void check_params(const MigrationParams *p, json_object *ret) {
        assert_true(p->has_max_bandwidth && p->has_downtime_limit && p->has_cpu_throttle_initial &&
                    p->has_cpu_throttle_increment && p->has_max_cpu_throttle && p->has_multifd_channels &&
                    p->has_max_postcopy_bandwidth && p->has_tls_creds && p->has_tls_hostname);
        assert_int_equal(p->max_bandwidth, u64_or0(ret, "max-bandwidth"));
        assert_int_equal(p->downtime_limit, u64_or0(ret, "downtime-limit"));
        assert_int_equal(p->cpu_throttle_initial, u64_or0(ret, "cpu-throttle-initial"));
        assert_int_equal(p->cpu_throttle_increment, u64_or0(ret, "cpu-throttle-increment"));
        assert_int_equal(p->max_cpu_throttle, u64_or0(ret, "max-cpu-throttle"));
        assert_int_equal(p->multifd_channels, u64_or0(ret, "multifd-channels"));
        assert_int_equal(p->max_postcopy_bandwidth, u64_or0(ret, "max-postcopy-bandwidth"));
        assert_string_equal(p->tls_creds, str_or(ret, "tls-creds", "?"));
        assert_string_equal(p->tls_hostname, str_or(ret, "tls-hostname", "?"));
}

static void check_caps(const MigrationCaps *c, json_object *ret) {
        uint64_t known = 0, enabled = 0;
        for (size_t i = 0; i < json_object_array_length(ret); i++) {
                json_object *e = json_object_array_get_idx(ret, i);
                int cap = migration_cap_from_string(str_or(e, "capability", ""));
                assert_true(cap >= 0); /* 7.2 has nothing this build does not know */
                known |= MIGRATION_CAP_BIT(cap);
                if (json_object_get_boolean(member(e, "state")))
                        enabled |= MIGRATION_CAP_BIT(cap);
        }
        assert_int_equal(c->known, known);
        assert_int_equal(c->enabled, enabled);
}

/* The recorded reply to the command at index @i of the same peer. */
static json_object *recorded_reply(int i) {
        for (int k = i + 1; k < n_msgs; k++)
                if (msgs[k].src == msgs[i].src && !msgs[k].to_qemu &&
                    (member(msgs[k].obj, "return") || member(msgs[k].obj, "error")))
                        return msgs[k].obj;
        fail_msg("no reply recorded for seq %d", msgs[i].seq);
        return NULL;
}

/* Issue the command of message @i through the matching typed call and
 * compare the outcome with the recorded reply. */
static void drive(Peer *p, int i, int *n_typed) {
        json_object *cmd = msgs[i].obj, *args = member(cmd, "arguments");
        json_object *reply = recorded_reply(i), *ret = member(reply, "return"), *err = member(reply, "error");
        const char *exec = str_or(cmd, "execute", "");
        int r;

        if (strcmp(exec, "query-version") == 0) {
                QmpVersion v;
                r = qmp_query_version(p->m, 2000, &v);
                if (!err) {
                        json_object *q = member(ret, "qemu");
                        assert_int_equal(r, 0);
                        assert_int_equal(v.major, u64_or0(q, "major"));
                        assert_int_equal(v.minor, u64_or0(q, "minor"));
                        assert_int_equal(v.micro, u64_or0(q, "micro"));
                        assert_string_equal(v.package, str_or(ret, "package", "?"));
                        assert_true(v.oob); /* from the recorded greeting */
                }
        } else if (strcmp(exec, "query-status") == 0) {
                QmpStatus st;
                r = qmp_query_status(p->m, 2000, &st);
                if (!err) {
                        assert_int_equal(r, 0);
                        assert_int_equal(st.running, json_object_get_boolean(member(ret, "running")));
                        assert_string_equal(st.status_name, str_or(ret, "status", ""));
                        assert_int_equal(st.status, run_state_from_string(st.status_name));
                        assert_int_not_equal(st.status, RUN_STATE_UNKNOWN);
                }
        } else if (strcmp(exec, "query-migrate") == 0) {
                MigrationStats s;
                r = qmp_query_migrate(p->m, 2000, &s);
                if (!err) {
                        assert_int_equal(r, 0);
                        check_stats(&s, ret);
                }
        } else if (strcmp(exec, "query-migrate-capabilities") == 0) {
                MigrationCaps c;
                r = qmp_query_migrate_capabilities(p->m, 2000, &c);
                if (!err) {
                        assert_int_equal(r, 0);
                        check_caps(&c, ret);
                }
        } else if (strcmp(exec, "query-migrate-parameters") == 0) {
                MigrationParams mp;
                r = qmp_query_migrate_parameters(p->m, 2000, &mp);
                if (!err) {
                        assert_int_equal(r, 0);
                        check_params(&mp, ret);
                }
        } else if (strcmp(exec, "migrate-set-capabilities") == 0 && !schema_invalid(msgs[i].seq)) {
                json_object *list = member(args, "capabilities");
                uint64_t mask = 0;
                bool state = json_object_get_boolean(member(json_object_array_get_idx(list, 0), "state"));
                for (size_t k = 0; k < json_object_array_length(list); k++)
                        mask |= MIGRATION_CAP_BIT(migration_cap_from_string(
                                str_or(json_object_array_get_idx(list, k), "capability", "")));
                r = qmp_migrate_set_capabilities(p->m, 2000, mask, state);
        } else if (strcmp(exec, "migrate-set-parameters") == 0 && !schema_invalid(msgs[i].seq)) {
                MigrationParams mp = { 0 };
                /* the recorded arguments, read the way Drover reads a reply */
                assert_int_equal(qmp_parse_migrate_params(json_object_to_json_string(args), &mp), 0);
                r = qmp_migrate_set_parameters(p->m, 2000, &mp);
        } else if (strcmp(exec, "migrate") == 0) {
                r = qmp_migrate(p->m, 2000, str_or(args, "uri", ""), false);
        } else if (strcmp(exec, "migrate-incoming") == 0) {
                r = qmp_migrate_incoming(p->m, 2000, str_or(args, "uri", ""));
        } else if (strcmp(exec, "quit") == 0) {
                r = qmp_quit(p->m, 2000);
        } else {
                /* the deliberately invalid ones go through the generic call */
                r = qmp_call(p->m, exec, args ? json_object_to_json_string(args) : NULL, 2000, NULL);
                (*n_typed)--;
        }
        (*n_typed)++;

        if (err) {
                const char *cls = str_or(err, "class", "");
                char want[512];
                snprintf(want, sizeof(want), "QEMU error %s: %s", cls, str_or(err, "desc", ""));
                if (r != (strcmp(cls, "CommandNotFound") == 0 ? -EOPNOTSUPP : -EREMOTEIO) ||
                    strcmp(err_msg(), want) != 0)
                        fail_msg("seq %d %s: got %d '%s', want '%s'", msgs[i].seq, exec, r, err_msg(), want);
        } else if (r != 0) {
                fail_msg("seq %d %s: %d %s", msgs[i].seq, exec, r, err_msg());
        }
}

static void check_events(Peer *p) {
        int n = (int) json_object_array_length(p->events);
        assert_true(evrec_wait(&p->rec, n, 3000));
        sleep_ms(50);
        assert_int_equal(evrec_count(&p->rec), n);
        for (int i = 0; i < n; i++) {
                json_object *want = json_object_array_get_idx(p->events, i), *ts = member(want, "timestamp");
                json_object *data = member(want, "data");
                const QmpEvent *ev = &p->rec.ev[i];
                assert_string_equal(ev->name, str_or(want, "event", ""));
                assert_int_equal(ev->qemu_timestamp_us,
                                 u64_or0(ts, "seconds") * 1000000u + u64_or0(ts, "microseconds"));
                if (data) {
                        json_object *got = json_tokener_parse(ev->data_json);
                        assert_true(json_object_equal(got, data));
                        json_object_put(got);
                } else
                        assert_null(ev->data_json);
                if (strcmp(ev->name, "MIGRATION") == 0) {
                        assert_int_equal(ev->type, QMP_EVENT_MIGRATION);
                        assert_int_equal(ev->migration_status,
                                         migration_status_from_string(str_or(data, "status", "")));
                } else if (strcmp(ev->name, "MIGRATION_PASS") == 0) {
                        assert_int_equal(ev->type, QMP_EVENT_MIGRATION_PASS);
                        assert_int_equal(ev->pass, u64_or0(data, "pass"));
                } else if (strcmp(ev->name, "STOP") == 0) {
                        assert_int_equal(ev->type, QMP_EVENT_STOP);
                } else if (strcmp(ev->name, "RESUME") == 0) {
                        assert_int_equal(ev->type, QMP_EVENT_RESUME);
                } else if (strcmp(ev->name, "SHUTDOWN") == 0) {
                        assert_int_equal(ev->type, QMP_EVENT_SHUTDOWN);
                        assert_false(ev->guest);
                        assert_string_equal(ev->reason, "host-qmp-quit");
                }
        }
}

static void test_recorded_session(void **state) {
        Peer src = { .name = "src" }, dst = { .name = "dst" };
        int n_typed = 0, skipped = 0;
        (void) state;

        load_session();
        build_peer(&src, true);
        build_peer(&dst, false);
        src.m = qt_connect(src.path, &src.rec);
        dst.m = qt_connect(dst.path, &dst.rec);

        for (int i = 0; i < n_msgs; i++) {
                if (skip_reason(msgs[i].seq)) {
                        skipped++;
                        continue;
                }
                if (!msgs[i].to_qemu || strcmp(str_or(msgs[i].obj, "execute", ""), "qmp_capabilities") == 0)
                        continue;
                drive(msgs[i].src ? &src : &dst, i, &n_typed);
        }
        printf("replayed %d messages: %d commands through typed calls, %d skipped with reasons\n",
               n_msgs, n_typed, skipped);
        assert_int_equal(skipped, 9);
        assert_int_equal(n_typed, 24); /* every command but the three invalid ones */

        check_events(&src);
        check_events(&dst);
        /* spot checks against the recording, beyond the generic comparison */
        assert_int_equal(json_object_array_length(src.events), 7);
        assert_int_equal(src.rec.ev[5].migration_status, MIGRATION_STATUS_COMPLETED);
        assert_int_equal(dst.rec.ev[0].migration_status, MIGRATION_STATUS_SETUP);

        /* QEMU exits after quit */
        assert_true(evrec_wait_eof(&src.rec, 3000));
        assert_true(evrec_wait_eof(&dst.rec, 3000));
        assert_int_equal(src.rec.eof_error, -ECONNRESET);
        assert_int_equal(src.rec.eof_calls, 1);

        assert_int_equal(fake_finish(src.fake, 3000, "src"), 0);
        assert_int_equal(fake_finish(dst.fake, 3000, "dst"), 0);
        qmp_monitor_close(src.m);
        qmp_monitor_close(dst.m);
        fake_free(src.fake);
        fake_free(dst.fake);
        evrec_destroy(&src.rec);
        evrec_destroy(&dst.rec);
        json_object_put(src.events);
        json_object_put(dst.events);
        free_session();
}

/* The completed query-migrate of the recording, field by field (seq 63),
 * and the 7.2 gotchas: {} before any migration, socket-address only on a
 * waiting destination, failed with error-desc after migrate returned {}. */
static void test_recorded_stats_values(void **state) {
        MigrationStats s;
        (void) state;
        load_session();
        for (int i = 0; i < n_msgs; i++) {
                json_object *ret = member(msgs[i].obj, "return");
                const char *text = ret ? json_object_to_json_string(ret) : NULL;
                switch (msgs[i].seq) {
                case 63:
                        assert_int_equal(qmp_parse_migrate_stats(text, &s), 0);
                        assert_int_equal(s.status, MIGRATION_STATUS_COMPLETED);
                        assert_int_equal(s.setup_time_ms, 1);
                        assert_int_equal(s.downtime_ms, 3);
                        assert_int_equal(s.total_time_ms, 19);
                        assert_int_equal(s.ram_total, 134750208);
                        assert_int_equal(s.ram_transferred, 750719);
                        assert_int_equal(s.ram_remaining, 0);
                        assert_int_equal(s.ram_duplicate, 32787);
                        assert_int_equal(s.ram_normal, 111);
                        assert_int_equal(s.ram_normal_bytes, 454656);
                        assert_int_equal(s.ram_page_size, 4096);
                        assert_int_equal(s.ram_dirty_sync_count, 2);
                        assert_true(fabs(s.ram_mbps - 383.38133333333332) < 1e-9);
                        assert_false(s.has_error_desc);
                        break;
                case 17:
                case 51:
                        assert_int_equal(qmp_parse_migrate_stats(text, &s), 0);
                        assert_int_equal(s.status, MIGRATION_STATUS_NONE);
                        break;
                case 36:
                        assert_int_equal(qmp_parse_migrate_stats(text, &s), 0);
                        assert_int_equal(s.status, MIGRATION_STATUS_FAILED);
                        assert_true(s.has_error_desc);
                        assert_string_equal(s.error_desc, "Failed to connect to '/run/qemu-rec/nobody-listens.sock': "
                                                          "No such file or directory");
                        break;
                default:
                        break;
                }
        }
        free_session();
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_recorded_session),
                cmocka_unit_test(test_recorded_stats_values),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}

/* Unit tests of the agent configuration (agent/agent-config.h): defaults, a
 * complete valid file, every member's bad values with the exact detail,
 * listen address forms and the dev_mode loopback rule, the QEMU binary and
 * TLS files checked on disk, and command-line overrides.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <cmocka.h>

#include "agent-config.h"
#include "err.h"
#include "testutil.h"

static const char *tmp;
static char qemu[256], cert[256], key[256], ca[256], noexec[256];

static void write_file(const char *path, const char *text, mode_t mode) {
        int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
        assert_true(fd >= 0);
        assert_int_equal(write(fd, text, strlen(text)), (ssize_t) strlen(text));
        close(fd);
        assert_int_equal(chmod(path, mode), 0);
}

/* A configuration that validates: defaults, the fake QEMU, dev_mode on a
 * unix socket. */
static AgentConfig good(void) {
        AgentConfig c;
        agent_config_defaults(&c);
        snprintf(c.host, sizeof(c.host), "host-a");
        snprintf(c.qemu_binary, sizeof(c.qemu_binary), "%s", qemu);
        snprintf(c.accel, sizeof(c.accel), "tcg");
        c.dev_mode = true;
        return c;
}

static void expect_invalid(const AgentConfig *c, const char *detail) {
        err_clear();
        int r = agent_config_validate(c);
        if (r != -EINVAL || strcmp(err_msg(), detail) != 0)
                fail_msg("got %d '%s'\nwant '%s'", r, err_msg(), detail);
}

static void test_defaults(void **state) {
        AgentConfig c;
        char host[256];
        agent_config_defaults(&c);
        if (gethostname(host, sizeof(host)) == 0 && strlen(host) < sizeof(c.host))
                assert_string_equal(c.host, host);
        assert_string_equal(c.state_dir, "/var/lib/drover/agent");
        assert_string_equal(c.run_dir, "/run/drover/agent");
        assert_int_equal(c.n_listen, 1);
        assert_string_equal(c.listen[0], "unix:/run/drover/agent.sock");
        assert_string_equal(c.qemu_binary, "/usr/bin/qemu-system-x86_64");
        assert_string_equal(c.accel, "kvm");
        assert_string_equal(c.tls_cert, "");
        assert_string_equal(c.tls_key, "");
        assert_string_equal(c.tls_ca, "");
        assert_false(c.dev_mode);
        assert_int_equal(c.job_timeout_ms, 30000);
        assert_int_equal(c.qmp_timeout_ms, 10000);
        assert_int_equal(c.qga_timeout_ms, 5000);
        assert_int_equal(c.start_timeout_ms, 10000);
        assert_int_equal(c.max_guests, 512);
        assert_int_equal(c.lane_queries, 4);
        assert_int_equal(c.lane_peer, 16);
        assert_int_equal(c.lane_migrate, 8);
        assert_int_equal(c.lane_control, 8);
        assert_int_equal(c.lane_streams, 16);
        assert_int_equal(c.rpc_threads, 0);
        assert_int_equal(c.max_request_bytes, 4194304);
        assert_string_equal(c.log_level, "info");
        assert_int_equal(c.n_image_roots, 1);
        assert_string_equal(c.image_roots[0], "/var/lib/drover/images");
        assert_false(c.allow_block_devices);
        assert_string_equal(c.qemu_user, "nobody");
        assert_string_equal(c.qemu_chroot, "");

        /* the defaults alone lack TLS or dev_mode */
        snprintf(c.qemu_binary, sizeof(c.qemu_binary), "%s", qemu);
        snprintf(c.host, sizeof(c.host), "h");
        expect_invalid(&c, "config: 'tls' is not set and dev_mode is off: the agent needs a certificate, key and CA, "
                           "or dev_mode for plaintext on loopback");
}

static void test_valid_file(void **state) {
        const char *path = tu_path(tmp, "agent.json");
        char *json = tu_asprintf(
                "{ \"host\": \"host-a\", \"state_dir\": \"/var/lib/drover/a\", \"run_dir\": \"/run/drover/a\",\n"
                "  \"listen\": [\"unix:/run/drover/agent.sock\", \"10.0.0.1:7400\", \"[2001:db8::1]:7401\",\n"
                "              \"agent-a.example.com:7402\"],\n"
                "  \"qemu_binary\": \"%s\", \"accel\": \"tcg\",\n"
                "  \"tls\": { \"cert\": \"%s\", \"key\": \"%s\", \"ca\": \"%s\" },\n"
                "  \"dev_mode\": false, \"job_timeout_ms\": 31000, \"qmp_timeout_ms\": 11000,\n"
                "  \"qga_timeout_ms\": 6000, \"start_timeout_ms\": 12000, \"max_guests\": 100,\n"
                "  \"rpc_lanes\": { \"queries\": 2, \"peer\": 3, \"migrate\": 4, \"control\": 5, \"streams\": 7 },\n"
                "  \"rpc_threads\": 4, \"max_request_bytes\": 1048576, \"log_level\": \"debug\" }\n",
                qemu, cert, key, ca);
        AgentConfig c;

        write_file(path, json, 0644);
        free(json);
        if (agent_config_load(path, &c) < 0 || agent_config_validate(&c) < 0)
                fail_msg("%s", err_msg());
        assert_string_equal(c.host, "host-a");
        assert_string_equal(c.state_dir, "/var/lib/drover/a");
        assert_string_equal(c.run_dir, "/run/drover/a");
        assert_int_equal(c.n_listen, 4);
        assert_string_equal(c.listen[0], "unix:/run/drover/agent.sock");
        assert_string_equal(c.listen[1], "10.0.0.1:7400");
        assert_string_equal(c.listen[2], "[2001:db8::1]:7401");
        assert_string_equal(c.listen[3], "agent-a.example.com:7402");
        assert_string_equal(c.qemu_binary, qemu);
        assert_string_equal(c.accel, "tcg");
        assert_string_equal(c.tls_cert, cert);
        assert_string_equal(c.tls_key, key);
        assert_string_equal(c.tls_ca, ca);
        assert_false(c.dev_mode);
        assert_int_equal(c.job_timeout_ms, 31000);
        assert_int_equal(c.qmp_timeout_ms, 11000);
        assert_int_equal(c.qga_timeout_ms, 6000);
        assert_int_equal(c.start_timeout_ms, 12000);
        assert_int_equal(c.max_guests, 100);
        assert_int_equal(c.lane_queries, 2);
        assert_int_equal(c.lane_peer, 3);
        assert_int_equal(c.lane_migrate, 4);
        assert_int_equal(c.lane_control, 5);
        assert_int_equal(c.lane_streams, 7);
        assert_int_equal(c.rpc_threads, 4); /* read, then ignored with a warning */
        assert_int_equal(c.max_request_bytes, 1048576);
        assert_string_equal(c.log_level, "debug");

        /* members left out keep their defaults */
        json = tu_asprintf("{\"qemu_binary\":\"%s\",\"dev_mode\":true,\"host\":\"h\"}", qemu);
        write_file(path, json, 0644);
        free(json);
        if (agent_config_load(path, &c) < 0 || agent_config_validate(&c) < 0)
                fail_msg("%s", err_msg());
        assert_true(c.dev_mode);
        assert_string_equal(c.listen[0], "unix:/run/drover/agent.sock");
        assert_int_equal(c.max_guests, 512);
}

typedef struct BadCase {
        const char *json;
        int err;
        const char *detail;
} BadCase;

static const BadCase bad_parse[] = {
        { "{\"host\":5}", -EINVAL, "config: 'host' must be a string, not an integer" },
        { "{\"state_dir\":null}", -EINVAL, "config: 'state_dir' must be a string, not null" },
        { "{\"run_dir\":\"/a\\u0000b\"}", -EINVAL, "config: 'run_dir' must not contain NUL characters" },
        { "{\"listen\":\"unix:/x\"}", -EINVAL, "config: 'listen' must be an array of strings, not a string" },
        { "{\"listen\":[\"unix:/x\",1]}", -EINVAL, "config: 'listen[1]' must be a string, not an integer" },
        { "{\"listen\":[\"a:1\",\"a:2\",\"a:3\",\"a:4\",\"a:5\",\"a:6\",\"a:7\",\"a:8\",\"a:9\"]}", -EINVAL,
          "config: 'listen' has more than 8 entries" },
        { "{\"qemu_binary\":[]}", -EINVAL, "config: 'qemu_binary' must be a string, not an array" },
        { "{\"accel\":\"kvm-and-more\"}", -EINVAL, "config: 'accel' is too long (12 bytes, at most 7)" },
        { "{\"tls\":\"/etc/cert.pem\"}", -EINVAL, "config: 'tls' must be an object, not a string" },
        { "{\"tls\":{\"crt\":\"/x\"}}", -EINVAL, "config: 'tls.crt' is not a known member" },
        { "{\"tls\":{\"cert\":1}}", -EINVAL, "config: 'tls.cert' must be a string, not an integer" },
        { "{\"dev_mode\":\"yes\"}", -EINVAL, "config: 'dev_mode' must be a boolean, not a string" },
        { "{\"dev_mode\":1}", -EINVAL, "config: 'dev_mode' must be a boolean, not an integer" },
        { "{\"job_timeout_ms\":0}", -EINVAL, "config: 'job_timeout_ms' must be between 1 and 3600000, not 0" },
        { "{\"qmp_timeout_ms\":1.5}", -EINVAL, "config: 'qmp_timeout_ms' must be an integer, not a fractional number" },
        { "{\"qga_timeout_ms\":\"5000\"}", -EINVAL, "config: 'qga_timeout_ms' must be an integer, not a string" },
        { "{\"start_timeout_ms\":3600001}", -EINVAL,
          "config: 'start_timeout_ms' must be between 1 and 3600000, not 3600001" },
        { "{\"max_guests\":-1}", -EINVAL, "config: 'max_guests' must be between 1 and 65536, not -1" },
        { "{\"rpc_threads\":1000}", -EINVAL, "config: 'rpc_threads' must be between 0 and 256, not 1000" },
        { "{\"rpc_lanes\":{\"peer\":0}}", -EINVAL, "config: 'rpc_lanes.peer' must be between 1 and 256, not 0" },
        { "{\"rpc_lanes\":{\"slow\":4}}", -EINVAL, "config: 'rpc_lanes.slow' is not a known member" },
        { "{\"rpc_lanes\":4}", -EINVAL, "config: 'rpc_lanes' must be an object, not an integer" },
        { "{\"rpc_lanes.peer\":4}", -EINVAL, "config: 'rpc_lanes.peer' is not a known member" },
        { "{\"max_request_bytes\":1024}", -EINVAL,
          "config: 'max_request_bytes' must be between 131072 and 67108864, not 1024" },
        { "{\"log_level\":true}", -EINVAL, "config: 'log_level' must be a string, not a boolean" },
        { "{\"qemu\":\"/usr/bin/qemu\"}", -EINVAL, "config: 'qemu' is not a known member" },
        { "{\"tls.cert\":\"/x\"}", -EINVAL, "config: 'tls.cert' is not a known member" },
        { "{\"host\":\"a\",\"host\":\"b\"}", -EINVAL, "config: 'host' appears more than once" },
        { "{\"tls\":{\"ca\":\"/a\",\"c\\u0061\":\"/b\"}}", -EINVAL, "config: 'tls.ca' appears more than once" },
        { "[]", -EINVAL, "config: must be a JSON object, not an array" },
        { "null", -EINVAL, "config: must be a JSON object, not null" },
        { "{\"host\":", -EINVAL, "config: truncated JSON (the document ends inside a value)" },
        { "", -EINVAL, "config: empty document" },
};

static void test_bad_members(void **state) {
        for (size_t i = 0; i < ELEMENTSOF(bad_parse); i++) {
                AgentConfig c;
                err_clear();
                int r = agent_config_parse(bad_parse[i].json, strlen(bad_parse[i].json), &c);
                if (r != bad_parse[i].err || strcmp(err_msg(), bad_parse[i].detail) != 0)
                        fail_msg("case %zu %s\n  got %d '%s'\n want %d '%s'", i, bad_parse[i].json, r, err_msg(),
                                 bad_parse[i].err, bad_parse[i].detail);
        }
        AgentConfig c;
        char *j = tu_asprintf("{\"state_dir\":\"/%0300d\"}", 0);
        assert_int_equal(agent_config_parse(j, strlen(j), &c), -EINVAL);
        assert_string_equal(err_msg(), "config: 'state_dir' is too long (301 bytes, at most 255)");
        free(j);
        assert_int_equal(agent_config_parse("{\"host\":1 x}", 12, &c), -EINVAL);
        assert_string_equal(err_msg(), "config: invalid JSON at line 1, column 11: object value separator ',' expected");
        assert_int_equal(agent_config_parse("{}\0{\"x\":1}", 9, &c), -EINVAL);
        assert_string_equal(err_msg(), "config: NUL byte at line 1, column 3");
        /* an explicitly empty list parses (no validation) and is then refused */
        assert_int_equal(agent_config_parse("{\"listen\":[]}", 13, &c), 0);
        assert_int_equal(c.n_listen, 0);
}

static void test_validate_members(void **state) {
        AgentConfig c;

        c = good();
        assert_int_equal(agent_config_validate(&c), 0);

        c = good();
        c.host[0] = '\0';
        expect_invalid(&c, "config: 'host' must be 1-63 of A-Z a-z 0-9 . _ - starting with a letter or digit, not '' "
                           "(set it when the host name does not fit)");
        c = good();
        snprintf(c.host, sizeof(c.host), "host a");
        expect_invalid(&c, "config: 'host' must be 1-63 of A-Z a-z 0-9 . _ - starting with a letter or digit, "
                           "not 'host a' (set it when the host name does not fit)");
        c = good();
        snprintf(c.state_dir, sizeof(c.state_dir), "var/lib/drover");
        expect_invalid(&c, "config: 'state_dir' must be an absolute path, not 'var/lib/drover'");
        c = good();
        c.run_dir[0] = '\0';
        expect_invalid(&c, "config: 'run_dir' is empty");
        c = good();
        snprintf(c.run_dir, sizeof(c.run_dir), "/%039d", 0);
        expect_invalid(&c, "config: 'run_dir' is longer than 39 bytes, too long for the guests' unix sockets");
        snprintf(c.run_dir, sizeof(c.run_dir), "/%038d", 0);
        assert_int_equal(agent_config_validate(&c), 0);

        c = good();
        c.n_listen = 0;
        expect_invalid(&c, "config: 'listen' is empty: give at least one address");
        c = good();
        c.n_listen = 2;
        snprintf(c.listen[1], sizeof(c.listen[1]), "%s", c.listen[0]);
        expect_invalid(&c, "config: 'listen[1]' repeats listen[0]");

        c = good();
        snprintf(c.accel, sizeof(c.accel), "hvf");
        expect_invalid(&c, "config: 'accel' must be kvm or tcg, not 'hvf'");
        c = good();
        c.qga_timeout_ms = 0;
        expect_invalid(&c, "config: 'qga_timeout_ms' must be between 1 and 3600000, not 0");
        c = good();
        c.max_request_bytes = (size_t) 1 << 40;
        expect_invalid(&c, "config: 'max_request_bytes' must be between 131072 and 67108864, not 1099511627776");
        c = good();
        c.lane_streams = 0;
        expect_invalid(&c, "config: 'rpc_lanes.streams' must be between 1 and 256, not 0");
        c = good();
        snprintf(c.log_level, sizeof(c.log_level), "verbose");
        expect_invalid(&c, "config: 'log_level' must be debug, info, warning or error, not 'verbose'");
}

static void test_qemu_binary(void **state) {
        AgentConfig c = good();
        char *want;

        snprintf(c.qemu_binary, sizeof(c.qemu_binary), "%s", tu_path(tmp, "no-such-qemu"));
        want = tu_asprintf("config: 'qemu_binary' '%s' does not exist (install QEMU or set qemu_binary)", c.qemu_binary);
        expect_invalid(&c, want);
        free(want);

        snprintf(c.qemu_binary, sizeof(c.qemu_binary), "%s", noexec);
        want = tu_asprintf("config: 'qemu_binary' '%s' is not executable", noexec);
        expect_invalid(&c, want);
        free(want);

        snprintf(c.qemu_binary, sizeof(c.qemu_binary), "%s", tmp);
        want = tu_asprintf("config: 'qemu_binary' '%s' is not a regular file", tmp);
        expect_invalid(&c, want);
        free(want);

        snprintf(c.qemu_binary, sizeof(c.qemu_binary), "qemu-system-x86_64");
        expect_invalid(&c, "config: 'qemu_binary' must be an absolute path, not 'qemu-system-x86_64'");
}

static AgentConfig with_tls(void) {
        AgentConfig c = good();
        c.dev_mode = false;
        snprintf(c.tls_cert, sizeof(c.tls_cert), "%s", cert);
        snprintf(c.tls_key, sizeof(c.tls_key), "%s", key);
        snprintf(c.tls_ca, sizeof(c.tls_ca), "%s", ca);
        return c;
}

static void test_tls(void **state) {
        AgentConfig c = with_tls();
        char *want;

        assert_int_equal(agent_config_validate(&c), 0);

        snprintf(c.tls_cert, sizeof(c.tls_cert), "%s", tu_path(tmp, "missing-cert.pem"));
        want = tu_asprintf("config: 'tls.cert' file '%s' does not exist", c.tls_cert);
        expect_invalid(&c, want);
        free(want);

        c = with_tls();
        snprintf(c.tls_ca, sizeof(c.tls_ca), "%s", tu_path(tmp, "nodir/ca.pem"));
        want = tu_asprintf("config: 'tls.ca' file '%s' does not exist", c.tls_ca);
        expect_invalid(&c, want);
        free(want);

        c = with_tls();
        c.tls_ca[0] = '\0';
        expect_invalid(&c, "config: 'tls.ca' is required with the other tls files");

        c = with_tls();
        snprintf(c.tls_key, sizeof(c.tls_key), "key.pem");
        expect_invalid(&c, "config: 'tls.key' must be an absolute path, not 'key.pem'");

        c = with_tls();
        snprintf(c.tls_key, sizeof(c.tls_key), "%s", tmp);
        want = tu_asprintf("config: 'tls.key' '%s' is not a regular file", tmp);
        expect_invalid(&c, want);
        free(want);

        c = with_tls();
        c.dev_mode = true;
        expect_invalid(&c, "config: 'dev_mode' means plaintext, but 'tls' is set too: choose one");

        c = good();
        c.dev_mode = false;
        expect_invalid(&c, "config: 'tls' is not set and dev_mode is off: the agent needs a certificate, key and CA, "
                           "or dev_mode for plaintext on loopback");
}

static void set_listen(AgentConfig *c, const char *a) {
        c->n_listen = 2;
        snprintf(c->listen[0], sizeof(c->listen[0]), "unix:/run/drover/agent.sock");
        snprintf(c->listen[1], sizeof(c->listen[1]), "%s", a);
}

static void test_listen_forms(void **state) {
        static const char *const loopback[] = {
                "127.0.0.1:7400", "127.9.8.7:1", "[::1]:7400", "[::ffff:127.0.0.1]:65535",
                "localhost:7400", "LocalHost:7400", "unix:/tmp/x.sock",
        };
        static const char *const remote[] = {
                "10.0.0.1:7400", "0.0.0.0:7400", "[::]:7400", "[2001:db8::1]:7400",
                "agent.example.com:7400", "localhost.example.com:7400", "[::ffff:10.0.0.1]:7400",
        };
        static const struct {
                const char *addr, *detail;
        } broken[] = {
                { "unix:run/a.sock", "must name an absolute socket path: unix:/path, not 'unix:run/a.sock'" },
                { "10.0.0.1", "must be unix:/path, HOST:PORT or [IPV6]:PORT, not '10.0.0.1'" },
                { "10.0.0.1:0", "port must be 1..65535, not '0'" },
                { "10.0.0.1:65536", "port must be 1..65535, not '65536'" },
                { "10.0.0.1:", "port must be 1..65535, not ''" },
                { "10.0.0.1:+80", "port must be 1..65535, not '+80'" },
                { "::1:7400", "IPv6 addresses need brackets ([IPV6]:PORT), not '::1:7400'" },
                { "[::1]7400", "must be [IPV6]:PORT, not '[::1]7400'" },
                { "[::1:7400", "must be [IPV6]:PORT, not '[::1:7400'" },
                { "[zz::1]:7400", "'zz::1' is not an IPv6 address" },
                { "[127.0.0.1]:7400", "'127.0.0.1' is not an IPv6 address" },
                { "host_name:7400", "'host_name' is neither an IPv4 address nor a host name" },
                { "127.1:7400", "'127.1' is neither an IPv4 address nor a host name" },
                { "-a.example:7400", "'-a.example' is neither an IPv4 address nor a host name" },
                { "a..example:7400", "'a..example' is neither an IPv4 address nor a host name" },
                { ":7400", "'' is neither an IPv4 address nor a host name" },
        };
        AgentConfig c;
        char want[512];

        for (size_t i = 0; i < ELEMENTSOF(loopback); i++) {
                c = good();
                set_listen(&c, loopback[i]);
                if (agent_config_validate(&c) < 0)
                        fail_msg("%s: %s", loopback[i], err_msg());
        }
        for (size_t i = 0; i < ELEMENTSOF(remote); i++) {
                c = good();
                set_listen(&c, remote[i]);
                snprintf(want, sizeof(want),
                         "config: 'dev_mode' allows only unix sockets and loopback addresses, and listen[1] is '%s'",
                         remote[i]);
                expect_invalid(&c, want);
                c = with_tls(); /* fine with TLS */
                set_listen(&c, remote[i]);
                /* a wildcard or a name says nowhere for the migration stream */
                bool one_ip = strchr("0123456789", remote[i][0]) && strncmp(remote[i], "0.0.0.0", 7) != 0;
                one_ip = one_ip || (remote[i][0] == '[' && strncmp(remote[i], "[::]", 4) != 0);
                if (!one_ip) {
                        snprintf(want, sizeof(want), "config: 'migration_address' is required: the first TCP "
                                 "listen address '%s' is not one address of this host", remote[i]);
                        expect_invalid(&c, want);
                        snprintf(c.migration_address, sizeof(c.migration_address), "127.0.0.1");
                }
                if (agent_config_validate(&c) < 0)
                        fail_msg("%s: %s", remote[i], err_msg());
        }
        for (size_t i = 0; i < ELEMENTSOF(broken); i++) {
                c = with_tls();
                set_listen(&c, broken[i].addr);
                snprintf(want, sizeof(want), "config: 'listen[1]' %s", broken[i].detail);
                expect_invalid(&c, want);
        }
        c = good();
        set_listen(&c, "");
        snprintf(c.listen[1], sizeof(c.listen[1]), "unix:/%0120d", 0);
        expect_invalid(&c, "config: 'listen[1]' socket path is longer than 107 bytes");
}

/* Where incoming migration streams listen: the configured address (one IP
 * of this host) or the one derived from the listen addresses, and a port
 * range; everything else is refused with a detail naming the member. */
static void test_migration_stream(void **state) {
        static const struct {
                const char *addr, *detail;
        } bad_addr[] = {
                { "0.0.0.0", "must be one IP address of this host (no name, no wildcard, no brackets), not '0.0.0.0'" },
                { "::", "must be one IP address of this host (no name, no wildcard, no brackets), not '::'" },
                { "[::1]", "must be one IP address of this host (no name, no wildcard, no brackets), not '[::1]'" },
                { "host-b", "must be one IP address of this host (no name, no wildcard, no brackets), not 'host-b'" },
                { "224.0.0.1", "must be one IP address of this host (no name, no wildcard, no brackets), not '224.0.0.1'" },
                { "10.0.0.1 -S", "must be one IP address of this host (no name, no wildcard, no brackets), not '10.0.0.1 -S'" },
                { "192.0.2.77", "'192.0.2.77' is not an address of this host" },
        };
        static const struct {
                const char *ports, *detail;
        } bad_ports[] = {
                { "", "must be LOW-HIGH or one port, not ''" },
                { "49152-", "must be LOW-HIGH or one port, not '49152-'" },
                { "-49152", "must be LOW-HIGH or one port, not '-49152'" },
                { "49152-49215x", "must be LOW-HIGH or one port, not '49152-49215x'" },
                { "a-b", "must be LOW-HIGH or one port, not 'a-b'" },
                { "49215-49152", "must lie within 1024-65535 with LOW <= HIGH, not '49215-49152'" },
                { "80-90", "must lie within 1024-65535 with LOW <= HIGH, not '80-90'" },
                { "60000-70000", "must lie within 1024-65535 with LOW <= HIGH, not '60000-70000'" },
        };
        AgentConfig c = good();
        char host[64], want[512];
        unsigned lo, hi;

        /* defaults: only unix listeners, the documented range */
        assert_int_equal(agent_config_validate(&c), 0);
        assert_int_equal(agent_config_migration_host(&c, host, sizeof(host)), 0);
        assert_string_equal(host, "127.0.0.1");
        assert_int_equal(agent_config_migration_ports(&c, &lo, &hi), 0);
        assert_int_equal(lo, 49152);
        assert_int_equal(hi, 49215);
        /* derived from the first TCP listener; a configured one wins */
        c = with_tls();
        set_listen(&c, "[::1]:7400");
        assert_int_equal(agent_config_validate(&c), 0);
        assert_int_equal(agent_config_migration_host(&c, host, sizeof(host)), 0);
        assert_string_equal(host, "::1");
        snprintf(c.migration_address, sizeof(c.migration_address), "127.0.0.2");
        assert_int_equal(agent_config_validate(&c), 0);
        assert_int_equal(agent_config_migration_host(&c, host, sizeof(host)), 0);
        assert_string_equal(host, "127.0.0.2");
        assert_int_equal(agent_config_set(&c, "migration_ports", "50000"), 0);
        assert_int_equal(agent_config_validate(&c), 0);
        assert_int_equal(agent_config_migration_ports(&c, &lo, &hi), 0);
        assert_true(lo == 50000 && hi == 50000);

        for (size_t i = 0; i < ELEMENTSOF(bad_addr); i++) {
                c = with_tls();
                snprintf(c.migration_address, sizeof(c.migration_address), "%s", bad_addr[i].addr);
                snprintf(want, sizeof(want), "config: 'migration_address' %s", bad_addr[i].detail);
                expect_invalid(&c, want);
        }
        for (size_t i = 0; i < ELEMENTSOF(bad_ports); i++) {
                c = with_tls();
                snprintf(c.migration_ports, sizeof(c.migration_ports), "%s", bad_ports[i].ports);
                snprintf(want, sizeof(want), "config: 'migration_ports' %s", bad_ports[i].detail);
                expect_invalid(&c, want);
        }
}

/* metrics_listen: off by default; an IP literal and port, loopback or
 * not (set explicitly), through the file or --set; anything else refused
 * naming the member. */
static void test_metrics_listen(void **state) {
        AgentConfig c = good();
        assert_string_equal(c.metrics_listen, "");
        assert_int_equal(agent_config_validate(&c), 0);
        assert_int_equal(agent_config_set(&c, "metrics_listen", "127.0.0.1:9464"), 0);
        assert_int_equal(agent_config_validate(&c), 0);
        assert_int_equal(agent_config_set(&c, "metrics_listen", "10.1.2.3:9464"), 0);
        assert_int_equal(agent_config_validate(&c), 0);
        assert_int_equal(agent_config_set(&c, "metrics_listen", "[::1]:9464"), 0);
        assert_int_equal(agent_config_validate(&c), 0);
        static const char *const bad[] = { "localhost:9464", "127.0.0.1", "127.0.0.1:0", "127.0.0.1:70000", ":9464" };
        for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
                AgentConfig b = good();
                assert_int_equal(agent_config_set(&b, "metrics_listen", bad[i]), 0);
                char *want = tu_asprintf("config: 'metrics_listen' must be \"\" (off), \"IPv4:PORT\" or \"[IPv6]:PORT\" "
                                       "with a port of 1-65535, not '%s'", bad[i]);
                expect_invalid(&b, want);
                free(want);
        }
}

/* migration_transport, the ssh section and migration_peers: the choice per
 * destination host, and what validation refuses. */
static void test_migration_transports(void **state) {
        AgentConfig c = good(); /* dev_mode */
        AgentMigPeer p;
        char want[600];

        /* defaults: plain in dev_mode, tls with a certificate */
        assert_int_equal(agent_config_migration_peer(&c, "10.0.0.2", &p), 0);
        assert_int_equal(p.transport, MIG_TRANSPORT_PLAIN);
        c = with_tls();
        assert_int_equal(agent_config_migration_peer(&c, "10.0.0.2", &p), 0);
        assert_int_equal(p.transport, MIG_TRANSPORT_TLS);
        assert_string_equal(p.ssh_host, "10.0.0.2");
        assert_string_equal(p.ssh_user, "drover");
        assert_int_equal(p.ssh_port, 22);

        /* plain outside dev_mode, tls in it, an unknown name */
        assert_int_equal(agent_config_set(&c, "migration_transport", "plain"), 0);
        expect_invalid(&c, "config: 'migration_transport' is plain, which only dev_mode allows");
        c = good();
        assert_int_equal(agent_config_set(&c, "migration_transport", "tls"), 0);
        expect_invalid(&c, "config: 'migration_transport' is tls, and dev_mode has no certificate for it");
        assert_int_equal(agent_config_set(&c, "migration_transport", "scp"), 0);
        expect_invalid(&c, "config: 'migration_transport' must be tls, ssh or plain, not 'scp'");

        /* ssh needs its files */
        c = with_tls();
        assert_int_equal(agent_config_set(&c, "migration_transport", "ssh"), 0);
        expect_invalid(&c, "config: 'ssh.identity' is empty");
        assert_int_equal(agent_config_set(&c, "ssh.identity", key), 0);
        snprintf(want, sizeof(want), "config: 'ssh.known_hosts' file '%s/none' does not exist", tmp);
        assert_int_equal(agent_config_set(&c, "ssh.known_hosts", tu_path(tmp, "none")), 0);
        expect_invalid(&c, want);
        assert_int_equal(agent_config_set(&c, "ssh.known_hosts", ca), 0);
        assert_int_equal(agent_config_validate(&c), 0);

        /* per-peer overrides: the entry for the host, over the defaults */
        assert_int_equal(agent_config_set(&c, "migration_transport", "tls"), 0);
        assert_int_equal(agent_config_set(&c, "migration_peers",
                                          "10.0.0.9 transport=ssh ssh_host=bastion ssh_port=2222 ssh_user=mig,"
                                          "10.0.0.7 transport=tls"), 0);
        assert_int_equal(agent_config_validate(&c), 0);
        assert_int_equal(agent_config_migration_peer(&c, "10.0.0.9", &p), 0);
        assert_int_equal(p.transport, MIG_TRANSPORT_SSH);
        assert_string_equal(p.ssh_host, "bastion");
        assert_string_equal(p.ssh_user, "mig");
        assert_int_equal(p.ssh_port, 2222);
        assert_string_equal(p.ssh_identity, key);
        assert_int_equal(agent_config_migration_peer(&c, "10.0.0.7", &p), 0);
        assert_int_equal(p.transport, MIG_TRANSPORT_TLS);
        assert_int_equal(agent_config_migration_peer(&c, "10.0.0.99", &p), 0);
        assert_int_equal(p.transport, MIG_TRANSPORT_TLS);
        assert_string_equal(p.ssh_host, "10.0.0.99");

        /* bad entries */
        static const struct {
                const char *entry, *detail;
        } bad[] = {
                { "10.0.0.9 ssh_port=0", "config: 'migration_peers' ssh_port must be 1..65535, not '0'" },
                { "10.0.0.9 port=22", "config: 'migration_peers' knows transport, ssh_host, ssh_user, ssh_port, "
                                      "ssh_identity and ssh_known_hosts, not 'port'" },
                { "10.0.0.9 transport", "config: 'migration_peers' options are key=value, not 'transport'" },
                { "10.0.0.9 transport=plain", "config: 'migration_peers transport' is plain, which only dev_mode allows" },
                { " 10.0.0.9", "config: 'migration_peers' entries begin with a host, not ' 10.0.0.9'" },
        };
        for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
                assert_int_equal(agent_config_set(&c, "migration_peers", bad[i].entry), 0);
                expect_invalid(&c, bad[i].detail);
        }
        /* an ssh peer with a known_hosts file that is not there */
        c = with_tls();
        snprintf(want, sizeof(want), "10.0.0.9 transport=ssh ssh_identity=%s ssh_known_hosts=%s/none", key, tmp);
        assert_int_equal(agent_config_set(&c, "migration_peers", want), 0);
        snprintf(want, sizeof(want), "config: 'ssh.known_hosts' file '%s/none' does not exist", tmp);
        expect_invalid(&c, want);
}

static void test_load_errors(void **state) {
        AgentConfig c, before;
        const char *path = tu_path(tmp, "bad.json");
        char *want;

        memset(&c, 0x5a, sizeof(c));
        before = c;
        assert_int_equal(agent_config_load(tu_path(tmp, "missing.json"), &c), -ENOENT);
        want = tu_asprintf("config %s: cannot open: No such file or directory", tu_path(tmp, "missing.json"));
        assert_string_equal(err_msg(), want);
        free(want);

        /* parse errors carry the file name */
        write_file(path, "{\"dev_mode\": true, \"rpc_lanes\": {\"queries\": 0}}", 0644);
        assert_int_equal(agent_config_load(path, &c), -EINVAL);
        want = tu_asprintf("config %s: 'rpc_lanes.queries' must be between 1 and 256, not 0", path);
        assert_string_equal(err_msg(), want);
        free(want);

        write_file(path, "{\"dev_mode\": maybe}", 0644);
        assert_int_equal(agent_config_load(path, &c), -EINVAL);
        want = tu_asprintf("config %s: invalid JSON at line 1, column 14: unexpected character", path);
        assert_string_equal(err_msg(), want);
        free(want);

        char *big = malloc(70000);
        assert_non_null(big);
        memset(big, ' ', 69999);
        big[0] = '{';
        big[69998] = '}';
        big[69999] = '\0';
        write_file(path, big, 0644);
        free(big);
        assert_int_equal(agent_config_load(path, &c), -E2BIG);
        want = tu_asprintf("config %s: larger than the limit of 65536 bytes", path);
        assert_string_equal(err_msg(), want);
        free(want);

        assert_memory_equal(&c, &before, sizeof(c)); /* never written on failure */
}

static void test_set(void **state) {
        AgentConfig c = good(), before;

        assert_int_equal(agent_config_set(&c, "host", "host-b"), 0);
        assert_string_equal(c.host, "host-b");
        assert_int_equal(agent_config_set(&c, "dev_mode", "false"), 0);
        assert_false(c.dev_mode);
        assert_int_equal(agent_config_set(&c, "dev_mode", "true"), 0);
        assert_true(c.dev_mode);
        assert_int_equal(agent_config_set(&c, "job_timeout_ms", "5000"), 0);
        assert_int_equal(c.job_timeout_ms, 5000);
        assert_int_equal(agent_config_set(&c, "max_guests", "64"), 0);
        assert_int_equal(c.max_guests, 64);
        assert_int_equal(agent_config_set(&c, "max_request_bytes", "131072"), 0);
        assert_int_equal(c.max_request_bytes, 131072);
        assert_int_equal(agent_config_set(&c, "listen", "unix:/run/a.sock,127.0.0.1:7400,[::1]:7400"), 0);
        assert_int_equal(c.n_listen, 3);
        assert_string_equal(c.listen[0], "unix:/run/a.sock");
        assert_string_equal(c.listen[1], "127.0.0.1:7400");
        assert_string_equal(c.listen[2], "[::1]:7400");
        assert_int_equal(agent_config_set(&c, "listen", "127.0.0.1:7500"), 0);
        assert_int_equal(c.n_listen, 1);
        assert_int_equal(agent_config_set(&c, "log_level", "warning"), 0);
        assert_int_equal(agent_config_validate(&c), 0);
        assert_int_equal(agent_config_set(&c, "tls.cert", cert), 0);
        assert_string_equal(c.tls_cert, cert);

        static const struct {
                const char *name, *value, *detail;
        } bad[] = {
                { "foo", "1", "config: 'foo' is not a known member" },
                { "tls", "/x", "config: 'tls' is not a known member" },
                { "dev_mode", "maybe", "config: 'dev_mode' must be true or false, not 'maybe'" },
                { "dev_mode", "", "config: 'dev_mode' must be true or false, not ''" },
                { "job_timeout_ms", "12x", "config: 'job_timeout_ms' must be an integer, not '12x'" },
                { "job_timeout_ms", " 12", "config: 'job_timeout_ms' must be an integer, not ' 12'" },
                { "job_timeout_ms", "", "config: 'job_timeout_ms' must be an integer, not ''" },
                { "job_timeout_ms", "0", "config: 'job_timeout_ms' must be between 1 and 3600000, not 0" },
                { "max_guests", "-5", "config: 'max_guests' must be between 1 and 65536, not -5" },
                { "max_guests", "99999999999999999999",
                  "config: 'max_guests' must be between 1 and 65536, not 99999999999999999999" },
                { "listen", "a:1,a:2,a:3,a:4,a:5,a:6,a:7,a:8,a:9", "config: 'listen' has more than 8 entries" },
                { "accel", "kvm-and-more", "config: 'accel' is too long (12 bytes, at most 7)" },
        };
        for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
                before = c;
                err_clear();
                int r = agent_config_set(&c, bad[i].name, bad[i].value);
                if (r != -EINVAL || strcmp(err_msg(), bad[i].detail) != 0)
                        fail_msg("case %zu: got %d '%s'\nwant '%s'", i, r, err_msg(), bad[i].detail);
                assert_memory_equal(&c, &before, sizeof(c));
        }
}

/* Command-line overrides on top of a file, then one validation (the
 * daemon's order): a file without TLS becomes valid with dev_mode=true, a
 * file naming a missing QEMU with a qemu_binary override. */
static void test_set_over_file(void **state) {
        const char *path = tu_path(tmp, "over.json");
        char *json = tu_asprintf("{\"host\":\"h\",\"qemu_binary\":\"/nonexistent/qemu\",\"accel\":\"tcg\","
                               "\"listen\":[\"127.0.0.1:7400\"]}");
        AgentConfig c;
        write_file(path, json, 0644);
        free(json);
        assert_int_equal(agent_config_load(path, &c), 0);
        expect_invalid(&c, "config: 'qemu_binary' '/nonexistent/qemu' does not exist (install QEMU or set qemu_binary)");
        assert_int_equal(agent_config_set(&c, "qemu_binary", qemu), 0);
        expect_invalid(&c, "config: 'tls' is not set and dev_mode is off: the agent needs a certificate, key and CA, "
                           "or dev_mode for plaintext on loopback");
        assert_int_equal(agent_config_set(&c, "dev_mode", "true"), 0);
        assert_int_equal(agent_config_validate(&c), 0);
        assert_int_equal(agent_config_set(&c, "listen", "10.1.2.3:7400"), 0);
        expect_invalid(&c, "config: 'dev_mode' allows only unix sockets and loopback addresses, and listen[0] is "
                           "'10.1.2.3:7400'");
}

/* Where guest files may live and whom QEMU runs as. */
static void test_image_roots_and_qemu_user(void **state) {
        AgentConfig c = good();
        char *json = tu_asprintf("{\"host\":\"h\",\"image_roots\":[\"/srv/a\",\"/srv/b\"],\"allow_block_devices\":true,"
                               "\"qemu_user\":\"nobody\",\"qemu_chroot\":\"%s\"}", tmp);
        assert_int_equal(agent_config_parse(json, strlen(json), &c), 0);
        free(json);
        assert_int_equal(c.n_image_roots, 2);
        assert_string_equal(c.image_roots[1], "/srv/b");
        assert_true(c.allow_block_devices);
        assert_string_equal(c.qemu_chroot, tmp);
        assert_int_equal(agent_config_set(&c, "image_roots", "/x,/y/z"), 0);
        assert_int_equal(c.n_image_roots, 2);
        assert_string_equal(c.image_roots[1], "/y/z");
        snprintf(c.qemu_binary, sizeof(c.qemu_binary), "%s", qemu);
        c.dev_mode = true;
        snprintf(c.listen[0], sizeof(c.listen[0]), "unix:/run/a.sock");
        assert_int_equal(agent_config_validate(&c), 0);

        static const struct {
                const char *name, *value, *detail;
        } bad[] = {
                { "image_roots", "relative", "config: 'image_roots[0]' must be a normalised absolute folder other than "
                  "'/' (no '.', '..', '//' or trailing '/'), not 'relative'" },
                { "image_roots", "/", "config: 'image_roots[0]' must be a normalised absolute folder other than '/' "
                  "(no '.', '..', '//' or trailing '/'), not '/'" },
                { "image_roots", "/srv/img/../..", "config: 'image_roots[0]' must be a normalised absolute folder "
                  "other than '/' (no '.', '..', '//' or trailing '/'), not '/srv/img/../..'" },
                { "image_roots", "/srv/img,/srv/img/", "config: 'image_roots[1]' must be a normalised absolute folder "
                  "other than '/' (no '.', '..', '//' or trailing '/'), not '/srv/img/'" },
                { "image_roots", "/a,/a", "config: 'image_roots[1]' repeats image_roots[0]" },
                { "qemu_user", "drover-no-such-user", "config: 'qemu_user' 'drover-no-such-user' is not a user on "
                  "this host (create it, e.g. useradd --system --no-create-home --shell /usr/sbin/nologin "
                  "drover-no-such-user, or name another)" },
                { "qemu_user", "root", "config: 'qemu_user' 'root' is root (uid 0): QEMU must run unprivileged" },
                { "qemu_user", "", "config: 'qemu_user' is empty: QEMU runs as an unprivileged user (e.g. \"nobody\")" },
                { "qemu_chroot", "/nonexistent/chroot", "config: 'qemu_chroot' '/nonexistent/chroot' is not a folder" },
                { "qemu_chroot", "/", "config: 'qemu_chroot' must be a normalised absolute folder other than '/', "
                  "not '/'" },
        };
        for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
                AgentConfig b = c;
                assert_int_equal(agent_config_set(&b, bad[i].name, bad[i].value), 0);
                expect_invalid(&b, bad[i].detail);
        }
        AgentConfig b = c;
        b.n_image_roots = 0;
        expect_invalid(&b, "config: 'image_roots' is empty: guests need at least one folder for their files");
        assert_int_equal(agent_config_set(&b, "image_roots", "/1,/2,/3,/4,/5,/6,/7,/8,/9"), -EINVAL);
        assert_string_equal(err_msg(), "config: 'image_roots' has more than 8 entries");
        json = tu_asprintf("{\"image_roots\":\"/srv\"}");
        assert_int_equal(agent_config_parse(json, strlen(json), &b), -EINVAL);
        assert_string_equal(err_msg(), "config: 'image_roots' must be an array of strings, not a string");
        free(json);
}

static int setup(void **state) {
        tmp = tu_tmpdir("agentcfg");
        assert_true(strlen(tmp) < 200);
        snprintf(qemu, sizeof(qemu), "%s", tu_path(tmp, "qemu-system-x86_64"));
        snprintf(cert, sizeof(cert), "%s", tu_path(tmp, "cert.pem"));
        snprintf(key, sizeof(key), "%s", tu_path(tmp, "key.pem"));
        snprintf(ca, sizeof(ca), "%s", tu_path(tmp, "ca.pem"));
        snprintf(noexec, sizeof(noexec), "%s", tu_path(tmp, "qemu-noexec"));
        write_file(qemu, "#!/bin/sh\nexit 0\n", 0755);
        write_file(noexec, "#!/bin/sh\nexit 0\n", 0644);
        write_file(cert, "-----BEGIN CERTIFICATE-----\n", 0644);
        write_file(key, "-----BEGIN PRIVATE KEY-----\n", 0600);
        write_file(ca, "-----BEGIN CERTIFICATE-----\n", 0644);
        return 0;
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_defaults),
                cmocka_unit_test(test_valid_file),
                cmocka_unit_test(test_bad_members),
                cmocka_unit_test(test_validate_members),
                cmocka_unit_test(test_qemu_binary),
                cmocka_unit_test(test_tls),
                cmocka_unit_test(test_listen_forms),
                cmocka_unit_test(test_migration_stream),
                cmocka_unit_test(test_metrics_listen),
                cmocka_unit_test(test_migration_transports),
                cmocka_unit_test(test_load_errors),
                cmocka_unit_test(test_set),
                cmocka_unit_test(test_image_roots_and_qemu_user),
                cmocka_unit_test(test_set_over_file),
        };
        return cmocka_run_group_tests(tests, setup, NULL);
}

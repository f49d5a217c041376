/* drover-agent configuration: a JSON file, validated at start.
 *
 *   { "host": "host-a",                        (default: gethostname)
 *     "state_dir": "/var/lib/drover/agent",    (status files; created 0700)
 *     "run_dir": "/run/drover/agent",          (sockets, serial logs, pidfiles; created 0700)
 *     "listen": ["unix:/run/drover/agent.sock", "10.0.0.1:7400"],
 *     "qemu_binary": "/usr/bin/qemu-system-x86_64",
 *     "accel": "kvm",                          ("kvm" or "tcg")
 *     "tls": { "cert": "...", "key": "...", "ca": "..." },
 *     "dev_mode": false,                       (plaintext; loopback/unix listeners only)
 *     "job_timeout_ms": 30000,
 *     "qmp_timeout_ms": 10000,
 *     "qga_timeout_ms": 5000,
 *     "start_timeout_ms": 10000,
 *     "finish_ask_ms": 300000,                 (docs/recovery.md, "Ambiguity policy")
 *     "postcopy_recover_ms": 600000,           (docs/migration.md, "Post-copy recovery")
 *     "max_guests": 512,
 *     "rpc_lanes": { "queries": 4, "peer": 16, "migrate": 8, "control": 8, "streams": 16 },
 *     "max_request_bytes": 4194304,
 *     "log_level": "info",
 *     "image_roots": ["/var/lib/drover/images"], (guest files live under these)
 *     "allow_block_devices": false,            (disks may be block devices in a root)
 *     "qemu_user": "nobody",                   (QEMU drops to this user: -runas)
 *     "qemu_chroot": "",                       (QEMU chroots here after start; "" = off)
 *     "migration_address": "10.0.0.1",         (where incoming streams listen; docs/migration.md)
 *     "migration_ports": "49152-49215",        (incoming streams: a random free port of these)
 *     "metrics_listen": "",                    (Prometheus /metrics: "" = off, "127.0.0.1:9464")
 *     "migration_transport": "tls",            (outgoing streams: tls, ssh, or plain in dev_mode)
 *     "ssh": { "user": "drover", "port": 22,   (the SSH transport: docs/migration.md)
 *              "identity": "/etc/drover/ssh/id_ed25519",
 *              "known_hosts": "/etc/drover/ssh/known_hosts" },
 *     "migration_peers": ["10.0.0.2 transport=ssh ssh_port=2222"] }
 *
 * Unknown members, wrong types, relative paths, a missing QEMU binary, an
 * empty listen list, TLS files that do not exist, or neither TLS nor
 * dev_mode: each is -EINVAL with a detail naming the member.  Command-line
 * options of drover-agent override the file (agent_config_set()), so the
 * whole configuration is validated once, after the overrides:
 * agent_config_load(), agent_config_set()..., agent_config_validate().
 * run_dir is at most 39 bytes, so that every guest's QMP/QGA socket
 * (<run_dir>/<name>.qmp, names up to 63 bytes) fits a unix socket address.
 * Bounds: timeouts 1..3600000 ms, max_guests 1..65536, rpc_lanes.* 1..256,
 * max_request_bytes 131072..67108864 (a 64 KiB definition must fit).
 * image_roots: 1..8 absolute, normalised directories (no "." or "..", no
 * "//", no trailing "/", not "/" itself); a root that does not exist is
 * not a configuration error (its guests fail their file checks).
 * qemu_user must exist on this host and must not be uid 0; qemu_chroot,
 * when set, is an absolute path other than "/" to an existing directory.
 * docs/agent.md ("Guest files and the QEMU user") has the reasons.
 * migration_address is an IP literal of this host (not a wildcard, not a
 * name; a configured one must be bindable here); empty means the host of
 * the first TCP listen address when that is an IP literal, or 127.0.0.1
 * when every listener is a unix socket; otherwise it is required.
 * migration_ports is "LOW-HIGH" (or one port), within 1024..65535.
 * metrics_listen is "" (off, the default), "IPv4:PORT" or "[IPv6]:PORT"
 * (metrics_listen_parse()): the endpoint has no authentication, so keep it
 * on loopback unless a non-loopback address is what you mean to expose
 * (docs/operations.md, "Metrics").
 * migration_transport is how this agent's outgoing streams travel when a
 * Migrate request does not say: "" (tls with a certificate, plain in
 * dev_mode), "tls" (not in dev_mode), "ssh", or "plain" (dev_mode only).
 * migration_peers (at most 16) override it per destination host: "HOST"
 * (the destination agent's host as Migrate names it) then any of
 * transport=, ssh_host= (where the SSH session goes; default HOST),
 * ssh_user=, ssh_port=, ssh_identity=, ssh_known_hosts=.  When any
 * transport is ssh, its identity and known_hosts must be readable files.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "migparams.h"

#define AGENT_MAX_LISTEN 8
#define AGENT_MAX_IMAGE_ROOTS 8
#define AGENT_MAX_MIG_PEERS 16

typedef struct AgentConfig {
        char host[64];
        char state_dir[256];
        char run_dir[256];
        size_t n_listen;
        char listen[AGENT_MAX_LISTEN][256];
        char qemu_binary[256];
        char accel[8];
        char tls_cert[256];
        char tls_key[256];
        char tls_ca[256];
        bool dev_mode;
        int64_t job_timeout_ms;
        int64_t qmp_timeout_ms;
        int64_t qga_timeout_ms;
        int64_t start_timeout_ms;
        int64_t finish_ask_ms; /* a source asks an unanswering destination this long, then alerts */
        int64_t postcopy_recover_ms; /* a source retries a paused post-copy this long, then alerts */
        unsigned max_guests;
        /* gRPC worker lanes (docs/agent.md, "Lanes"); agent-rpc.h lists
         * which methods each serves */
        unsigned lane_queries;  /* default 4 */
        unsigned lane_peer;     /* default 16 */
        unsigned lane_migrate;  /* default 8 */
        unsigned lane_control;  /* default 8 */
        unsigned lane_streams;  /* default 16 */
        unsigned rpc_threads;   /* the old single pool: 0, or given and ignored (main warns) */
        size_t max_request_bytes;
        char log_level[16];
        size_t n_image_roots;
        char image_roots[AGENT_MAX_IMAGE_ROOTS][256]; /* disks, kernel, initrd live below one */
        bool allow_block_devices; /* a disk may be a block device (still inside a root) */
        char qemu_user[64];       /* -runas: QEMU drops to it once started */
        char qemu_chroot[256];    /* -chroot after start; "" = none */
        char migration_address[64]; /* "" = derived (agent_config_migration_host()) */
        char migration_ports[16];   /* "LOW-HIGH"; agent_config_migration_ports() */
        char metrics_listen[64];    /* "" = no /metrics endpoint; metrics_listen_parse() */
        char migration_transport[8]; /* "", "tls", "ssh", "plain"; agent_config_migration_peer() */
        char ssh_user[64];
        unsigned ssh_port;
        char ssh_identity[256];
        char ssh_known_hosts[256];
        size_t n_migration_peers;
        char migration_peers[AGENT_MAX_MIG_PEERS][384]; /* "HOST key=value ..." */
} AgentConfig;

/* Defaults (see above). */
void agent_config_defaults(AgentConfig *c);
/* Read a file (at most 64 KiB) and parse it as agent_config_parse() does.
 * Not validated yet: apply the overrides, then agent_config_validate(). */
int agent_config_load(const char *path, AgentConfig *ret);
/* Parse JSON text, starting from the defaults: syntax, unknown or repeated
 * members, types, string sizes and integer bounds are checked here; the rest
 * is agent_config_validate()'s.  @ret is written only on success. */
int agent_config_parse(const char *json, size_t len, AgentConfig *ret);
/* Override one member by its JSON name from a string (--set dev_mode=true
 * gives "dev_mode", "true"); tls.cert, tls.key and tls.ca name the nested
 * ones.  Booleans: true/false (or 1/0, yes/no, on/off); integers: decimal;
 * "listen" and "image_roots": a comma-separated list that replaces the
 * current one.  Used by
 * command-line options.  -EINVAL for unknown names or bad values, and @c is
 * left unchanged. */
int agent_config_set(AgentConfig *c, const char *name, const char *value);
/* Check the whole configuration (paths absolute, binary executable, TLS
 * files readable, listen addresses parse, dev_mode only on loopback/unix,
 * image roots normalised, qemu_user exists and is not root). */
int agent_config_validate(const AgentConfig *c);
/* The address incoming migration streams listen on (a validated config):
 * migration_address, or the one derived from the listen addresses (above),
 * copied into @buf as a bare IP literal.  0, or -EINVAL when none can be
 * derived. */
int agent_config_migration_host(const AgentConfig *c, char *buf, size_t size);
/* How outgoing streams reach one destination host (a validated config):
 * migration_transport and the ssh section, with the migration_peers entry
 * for that host over them. */
typedef struct AgentMigPeer {
        MigTransport transport; /* never DEFAULT */
        char ssh_host[256];     /* where the SSH session goes */
        char ssh_user[64];
        unsigned ssh_port;
        char ssh_identity[256];
        char ssh_known_hosts[256];
} AgentMigPeer;

/* The settings for destination host @host (as the Migrate request names
 * the destination agent, without the port) into *@ret.  0, or -EINVAL for
 * an entry of migration_peers that does not parse (validation refuses
 * those). */
int agent_config_migration_peer(const AgentConfig *c, const char *host, AgentMigPeer *ret);
/* migration_ports of a validated config as numbers: 0, or -EINVAL. */
int agent_config_migration_ports(const AgentConfig *c, unsigned *ret_low, unsigned *ret_high);

/* droverctl: the operator's command line for the Drover coordinator.
 *
 *   droverctl [options] COMMAND [ARGS] [options]     (droverctl --help)
 *
 * This file parses the command line and dispatches.  Options may come
 * before or after the command; each command takes the global options and
 * its own (the table below), and anything else is refused before a call is
 * made: an unknown option, an option the command does not take, a number
 * that is not a whole number in its range, a wrong count of arguments, all
 * exit 2 with the reason on stderr.  `droverctl COMMAND --help` prints that
 * command's usage on stdout and exits 0; --version prints the version
 * (meson's project version, drover-version.h).  The commands live in
 * droverctl-show.c and droverctl-watch.c, the calls in droverctl-rpc.c;
 * docs/droverctl.md has the exit codes.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <getopt.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "drover-version.h"
#include "droverctl.h"
#include "log.h"

/* Options: an id (a bit in a command's mask), its argument's name and help. */
enum {
        OPT_COORDINATOR, OPT_TLS_CERT, OPT_TLS_KEY, OPT_TLS_CA, OPT_JSON, OPT_TIMEOUT, OPT_HELP, OPT_VERSION,
        OPT_WAIT, OPT_CANCEL_ON_INTERRUPT, OPT_DRY_RUN, OPT_TO, OPT_MAINTENANCE, OPT_STOP_ON_FAILURE,
        OPT_BANDWIDTH, OPT_DOWNTIME, OPT_POSTCOPY, OPT_AUTO_CONVERGE, OPT_TRANSPORT, OPT_VERBOSE, OPT_MAX_,
};
#define BIT(o) (1u << (o))
#define GLOBAL_OPTS                                                                                          \
        (BIT(OPT_COORDINATOR) | BIT(OPT_TLS_CERT) | BIT(OPT_TLS_KEY) | BIT(OPT_TLS_CA) | BIT(OPT_JSON) |     \
         BIT(OPT_TIMEOUT) | BIT(OPT_HELP) | BIT(OPT_VERSION) | BIT(OPT_VERBOSE))
#define PARAM_OPTS \
        (BIT(OPT_BANDWIDTH) | BIT(OPT_DOWNTIME) | BIT(OPT_POSTCOPY) | BIT(OPT_AUTO_CONVERGE) | BIT(OPT_STOP_ON_FAILURE) | \
         BIT(OPT_TRANSPORT))
#define FOLLOW_OPTS (BIT(OPT_WAIT) | BIT(OPT_CANCEL_ON_INTERRUPT) | BIT(OPT_DRY_RUN))

static const struct option long_opts[] = {
        { "coordinator", required_argument, NULL, 256 + OPT_COORDINATOR },
        { "tls-cert", required_argument, NULL, 256 + OPT_TLS_CERT },
        { "tls-key", required_argument, NULL, 256 + OPT_TLS_KEY },
        { "tls-ca", required_argument, NULL, 256 + OPT_TLS_CA },
        { "json", no_argument, NULL, 256 + OPT_JSON },
        { "timeout", required_argument, NULL, 256 + OPT_TIMEOUT },
        { "help", no_argument, NULL, 256 + OPT_HELP },
        { "version", no_argument, NULL, 256 + OPT_VERSION },
        { "wait", no_argument, NULL, 256 + OPT_WAIT },
        { "cancel-on-interrupt", no_argument, NULL, 256 + OPT_CANCEL_ON_INTERRUPT },
        { "dry-run", no_argument, NULL, 256 + OPT_DRY_RUN },
        { "to", required_argument, NULL, 256 + OPT_TO },
        { "maintenance", no_argument, NULL, 256 + OPT_MAINTENANCE },
        { "stop-on-failure", no_argument, NULL, 256 + OPT_STOP_ON_FAILURE },
        { "bandwidth", required_argument, NULL, 256 + OPT_BANDWIDTH },
        { "downtime", required_argument, NULL, 256 + OPT_DOWNTIME },
        { "postcopy", required_argument, NULL, 256 + OPT_POSTCOPY },
        { "transport", required_argument, NULL, 256 + OPT_TRANSPORT },
        { "auto-converge", no_argument, NULL, 256 + OPT_AUTO_CONVERGE },
        { "verbose", no_argument, NULL, 256 + OPT_VERBOSE },
        { 0 },
};

/* Help for each option, by id (with its short form where it has one). */
static const char *const opt_help[OPT_MAX_] = {
        [OPT_COORDINATOR] = ("-c, --coordinator ADDR  unix:/path or HOST:PORT, or several ADDR,ADDR,... tried in\n"
                             "                          order (a standby's refusal leads to the leader)\n"
                             "                          ($DROVER_COORDINATOR, default unix:/run/drover/coordinator.sock)"),
        [OPT_VERBOSE] = "-v, --verbose           say which coordinator answered (on stderr)",
        [OPT_TLS_CERT] = "--tls-cert FILE         client certificate ($DROVER_TLS_CERT)",
        [OPT_TLS_KEY] = "--tls-key FILE          its key ($DROVER_TLS_KEY)",
        [OPT_TLS_CA] = "--tls-ca FILE           the cluster CA ($DROVER_TLS_CA)",
        [OPT_JSON] = "--json                  JSON output",
        [OPT_TIMEOUT] = "--timeout SECONDS       deadline of each call, 0.1..86400 (default 30)",
        [OPT_HELP] = "-h, --help              this help",
        [OPT_VERSION] = "--version               print the version",
        [OPT_WAIT] = "--wait                  follow the job until it ends (Ctrl-C stops following; the job goes on)",
        [OPT_CANCEL_ON_INTERRUPT] = "--cancel-on-interrupt   on Ctrl-C while following, cancel the job first",
        [OPT_DRY_RUN] = "--dry-run               show the plan, move nothing",
        [OPT_TO] = "--to HOST               destination (default: placement chooses)",
        [OPT_MAINTENANCE] = "--maintenance           leave the host in maintenance once empty",
        [OPT_STOP_ON_FAILURE] = "--stop-on-failure       stop the job at the first failed guest",
        [OPT_BANDWIDTH] = "--bandwidth MIBPS       0..1048576 MiB/s (0: the coordinator's default)",
        [OPT_DOWNTIME] = "--downtime MS           initial downtime limit, 1..60000 ms",
        [OPT_POSTCOPY] = "--postcopy allowed|after  switch to post-copy when allowed, or after the first pass",
        [OPT_TRANSPORT] = "--transport tls|ssh|plain  the migration stream (default: each source agent's config)",
        [OPT_AUTO_CONVERGE] = "--auto-converge         throttle the guest's vCPUs when it does not converge",
};

typedef struct Command {
        const char *name, *args, *summary;
        int min_args, max_args; /* -1: any number */
        unsigned opts;          /* besides GLOBAL_OPTS */
        int (*run)(int argc, char **argv);
} Command;

static int cmd_help(int argc, char **argv);

static const Command commands[] = {
        { "hosts", "", "list hosts: state, health, capacity, last error", 0, 0, 0, dctl_cmd_hosts },
        { "vms", "[HOST]", "list guests (of HOST)", 0, 1, 0, dctl_cmd_vms },
        { "migrate", "GUEST...", "migrate guests (a job)", 1, -1, FOLLOW_OPTS | PARAM_OPTS | BIT(OPT_TO), dctl_cmd_migrate },
        { "evacuate", "HOST", "move every guest off HOST (a job)", 1, 1,
          FOLLOW_OPTS | PARAM_OPTS | BIT(OPT_MAINTENANCE), dctl_cmd_evacuate },
        { "plan", "evacuate HOST | migrate GUEST...", "show the plan and its estimated makespan, move nothing", 2, -1,
          PARAM_OPTS | BIT(OPT_TO) | BIT(OPT_MAINTENANCE), dctl_cmd_plan },
        { "jobs", "", "list jobs", 0, 0, 0, dctl_cmd_jobs },
        { "job", "ID", "show a job with its history", 1, 1, 0, dctl_cmd_job },
        { "watch", "ID", "follow a job until it ends", 1, 1, BIT(OPT_CANCEL_ON_INTERRUPT), dctl_cmd_watch },
        { "cancel", "ID", "cancel a job (running migrations are aborted, sources resume)", 1, 1, 0, dctl_cmd_cancel },
        { "host", "enable|drain|maintenance|add|remove|set|show ...",
          "set a host's state, or change the inventory (docs/droverctl.md, \"Inventory\")", 2, -1, 0, dctl_cmd_host },
        { "help", "[COMMAND]", "this help, or a command's", 0, 1, 0, cmd_help },
};
#define N_COMMANDS (sizeof(commands) / sizeof(commands[0]))

static const char exit_codes_help[] =
        "exit codes: 0 success, 1 the job failed, 2 usage, 3 partial failure, 4 refused or other error,\n"
        "            5 not found, 6 coordinator unreachable or no answer in time, 130 interrupted\n";

static const Command *command_find(const char *name) {
        for (size_t i = 0; i < N_COMMANDS; i++)
                if (strcmp(commands[i].name, name) == 0)
                        return &commands[i];
        return NULL;
}

static const char *opt_name(int id) {
        for (const struct option *o = long_opts; o->name; o++)
                if (o->val == 256 + id)
                        return o->name;
        return "?";
}

static void print_opts(FILE *f, unsigned mask) {
        for (int i = 0; i < OPT_MAX_; i++)
                if (mask & BIT(i))
                        fprintf(f, "  %s\n", opt_help[i]);
}

static void usage_command(FILE *f, const Command *c) {
        fprintf(f, "usage: droverctl [options] %s %s\n  %s\noptions:\n", c->name, c->args, c->summary);
        print_opts(f, c->opts);
        print_opts(f, GLOBAL_OPTS);
        fputs(exit_codes_help, f);
}

/* A usage error: the reason (printf-style) and the usage line of @c (of
 * droverctl when NULL) on stderr.  Returns the exit code. */
static int usage_error(const Command *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int usage_error(const Command *c, const char *fmt, ...) {
        va_list ap;
        if (fmt) {
                fputs("droverctl: ", stderr);
                va_start(ap, fmt);
                vfprintf(stderr, fmt, ap);
                va_end(ap);
                fputc('\n', stderr);
        }
        if (c)
                fprintf(stderr, "usage: droverctl [options] %s %s (droverctl %s --help)\n", c->name, c->args, c->name);
        else
                fprintf(stderr, "usage: droverctl [options] COMMAND [ARGS] (droverctl --help)\n");
        return DCTL_EXIT_USAGE;
}

static void usage(FILE *f) {
        fprintf(f, "usage: droverctl [options] COMMAND [ARGS]   (droverctl COMMAND --help for its options)\ncommands:\n");
        for (size_t i = 0; i < N_COMMANDS; i++) {
                char head[64];
                snprintf(head, sizeof(head), "%s %s", commands[i].name, commands[i].args);
                fprintf(f, "  %-42s %s\n", head, commands[i].summary);
        }
        fprintf(f, "options:\n");
        print_opts(f, GLOBAL_OPTS);
        fputs(exit_codes_help, f);
}

static int cmd_help(int argc, char **argv) {
        const Command *c = argc ? command_find(argv[0]) : NULL;
        if (argc && !c)
                return usage_error(NULL, "help: no command '%s'", argv[0]);
        if (c)
                usage_command(stdout, c);
        else
                usage(stdout);
        return DCTL_EXIT_OK;
}

/* Most --bandwidth takes: 1 TiB/s in MiB/s, far above any link, and
 * small enough that the bytes per second never wrap. */
#define BANDWIDTH_MIBPS_MAX (1024u * 1024u)
/* The ceiling of migration downtime limits (mig_params_validate()). */
#define DOWNTIME_MS_MAX 60000u

/* @val of option @opt as a whole number in [@min, @max]: true with *ret
 * set, or false with the reason on stderr. */
static bool parse_number(const char *opt, const char *val, uint64_t min, uint64_t max, const char *unit,
                         uint64_t *ret) {
        char *end = NULL;
        unsigned long long v = 0;
        errno = 0;
        if (*val >= '0' && *val <= '9')
                v = strtoull(val, &end, 10);
        if (!end || *end || errno || v < min || v > max) {
                fprintf(stderr, "droverctl: --%s: '%s' is not a whole number of %s between %llu and %llu\n", opt, val,
                        unit, (unsigned long long) min, (unsigned long long) max);
                return false;
        }
        *ret = v;
        return true;
}

/* --timeout SECONDS: digits with at most one decimal point, 0.1..86400. */
static bool parse_seconds(const char *val, int64_t *ret_ms) {
        size_t digits = strspn(val, "0123456789"), dot = val[digits] == '.';
        size_t frac = dot ? strspn(val + digits + 1, "0123456789") : 0;
        double s = digits + frac > 0 && !val[digits + dot + frac] ? strtod(val, NULL) : -1;
        if (!(s >= 0.1 && s <= 86400)) {
                fprintf(stderr, "droverctl: --timeout: '%s' is not a number of seconds between 0.1 and 86400\n", val);
                return false;
        }
        *ret_ms = (int64_t) (s * 1000 + 0.5);
        return true;
}

/* Apply option @id with argument @val.  Returns false (reason printed) for
 * a bad value. */
static bool set_option(int id, const char *val) {
        uint64_t v;
        switch (id) {
        case OPT_COORDINATOR: dctl_opt.target = val; return true;
        case OPT_TLS_CERT: dctl_opt.tls.cert_file = val; return true;
        case OPT_TLS_KEY: dctl_opt.tls.key_file = val; return true;
        case OPT_TLS_CA: dctl_opt.tls.ca_file = val; return true;
        case OPT_JSON: dctl_opt.json = true; return true;
        case OPT_TIMEOUT: return parse_seconds(val, &dctl_opt.timeout_ms);
        case OPT_WAIT: dctl_opt.wait = true; return true;
        case OPT_CANCEL_ON_INTERRUPT: dctl_opt.cancel_on_interrupt = true; return true;
        case OPT_DRY_RUN: dctl_opt.dry_run = true; return true;
        case OPT_TO: dctl_opt.to = val; return true;
        case OPT_MAINTENANCE: dctl_opt.maintenance = true; return true;
        case OPT_STOP_ON_FAILURE: dctl_opt.stop_on_failure = true; return true;
        case OPT_BANDWIDTH:
                if (!parse_number("bandwidth", val, 0, BANDWIDTH_MIBPS_MAX, "MiB/s", &v))
                        return false;
                dctl_opt.params.bandwidth = v * 1024 * 1024;
                return true;
        case OPT_DOWNTIME:
                if (!parse_number("downtime", val, 1, DOWNTIME_MS_MAX, "milliseconds", &v))
                        return false;
                dctl_opt.params.downtime_ms = (uint32_t) v;
                return true;
        case OPT_POSTCOPY:
                if (strcmp(val, "allowed") && strcmp(val, "after")) {
                        fprintf(stderr, "droverctl: --postcopy: '%s' is not 'allowed' or 'after'\n", val);
                        return false;
                }
                dctl_opt.params.postcopy = (PostcopyPolicy) postcopy_policy_from_string(val);
                return true;
        case OPT_AUTO_CONVERGE: dctl_opt.params.auto_converge = true; return true;
        case OPT_VERBOSE: dctl_opt.verbose = true; return true;
        case OPT_TRANSPORT: {
                int t = mig_transport_from_string(val); /* core/migparams.h */
                if (t <= MIG_TRANSPORT_DEFAULT) {
                        fprintf(stderr, "droverctl: --transport: '%s' is not 'tls', 'ssh' or 'plain'\n", val);
                        return false;
                }
                dctl_opt.params.transport = (MigTransport) t;
                return true;
        }
        default: return true; /* --help, --version: main() */
        }
}

int main(int argc, char **argv) {
        static char *args[4096];
        int nargs = 0, c;
        unsigned given = 0;
        const char *cmd = NULL;

        /* a command line shows its own errors; library warnings (e.g. the
         * plaintext notice on a local unix socket) only with DROVER_LOG */
        if (!getenv("DROVER_LOG"))
                log_set_level(LOG_LEVEL_ERROR);
        if (getenv("DROVER_COORDINATOR"))
                dctl_opt.target = getenv("DROVER_COORDINATOR");
        dctl_opt.error_details = dctl_blocked_details;
        dctl_opt.tls.cert_file = getenv("DROVER_TLS_CERT");
        dctl_opt.tls.key_file = getenv("DROVER_TLS_KEY");
        dctl_opt.tls.ca_file = getenv("DROVER_TLS_CA");

        /* "-": arguments come back in order (c == 1), so options may follow
         * the command whatever POSIXLY_CORRECT says; "--" ends options */
        while ((c = getopt_long(argc, argv, "-c:hv", long_opts, NULL)) >= 0) {
                int id = c == 'c' ? OPT_COORDINATOR : c == 'h' ? OPT_HELP : c == 'v' ? OPT_VERBOSE : c - 256;
                if (c == 1) {
                        if (!cmd)
                                cmd = optarg;
                        else if (nargs < (int) (sizeof(args) / sizeof(args[0])))
                                args[nargs++] = optarg;
                        else
                                return usage_error(NULL, "more than %zu arguments", sizeof(args) / sizeof(args[0]));
                        continue;
                }
                if (id < 0 || id >= OPT_MAX_) /* getopt_long said what was wrong */
                        return usage_error(cmd ? command_find(cmd) : NULL, NULL);
                if (!set_option(id, optarg))
                        return usage_error(cmd ? command_find(cmd) : NULL, NULL);
                given |= BIT(id);
        }
        for (int i = optind; i < argc; i++) { /* after "--" */
                if (!cmd)
                        cmd = argv[i];
                else if (nargs < (int) (sizeof(args) / sizeof(args[0])))
                        args[nargs++] = argv[i];
                else
                        return usage_error(NULL, "more than %zu arguments", sizeof(args) / sizeof(args[0]));
        }

        if (given & BIT(OPT_VERSION)) {
                printf("droverctl %s\n", DROVER_VERSION);
                return DCTL_EXIT_OK;
        }
        const Command *command = cmd ? command_find(cmd) : NULL;
        if (given & BIT(OPT_HELP) && (!cmd || command)) {
                if (command)
                        usage_command(stdout, command);
                else
                        usage(stdout);
                return DCTL_EXIT_OK;
        }
        if (!cmd) {
                usage(stderr);
                return DCTL_EXIT_USAGE;
        }
        if (!command) {
                fprintf(stderr, "droverctl: no command '%s'\n", cmd);
                usage(stderr);
                return DCTL_EXIT_USAGE;
        }
        unsigned extra = given & ~(GLOBAL_OPTS | command->opts);
        if (extra)
                return usage_error(command, "%s does not take --%s", cmd, opt_name(__builtin_ctz(extra)));
        if (nargs < command->min_args || (command->max_args >= 0 && nargs > command->max_args))
                return usage_error(command, "%s takes %s", cmd, command->args[0] ? command->args : "no arguments");
        if (command->run == cmd_help)
                return cmd_help(nargs, args);
        if (!dctl_opt.dry_run && (dctl_opt.wait || command->run == dctl_cmd_watch))
                dctl_interrupt_setup(); /* before the client's threads */
        int code = dctl_connect();
        if (code)
                return code;
        code = command->run(nargs, args);
        dctl_disconnect();
        return code;
}

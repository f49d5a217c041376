/* droverctl following a job: `watch ID` and `migrate/evacuate --wait`.
 *
 * WatchJob streams the job at every change.  On a terminal the display is
 * redrawn in place: a summary line, then one row per guest, the rows that
 * matter first (migrating, then failed or blocked, cancelled, queued, and
 * the ones done last), at most as many as the terminal has rows; the guests
 * left out are counted by phase in a last line, so a guest still moving is
 * never hidden behind finished ones.  Piped, the whole job is printed again,
 * in the job's order, whenever a phase changed; with --json every message is
 * one line of JSON.
 *
 * Several --coordinator addresses: a stream that breaks with UNAVAILABLE
 * before its first message (no coordinator there) moves on to the next
 * address, as a unary call does.  One that breaks after (its coordinator
 * died: a leader killed) is opened again on the addresses in turn, for at
 * most DCTL_WATCH_FOLLOW_MS from the loss; when one answers, one line on
 * stderr, "lost the coordinator; following the job on ADDR", and the job
 * shown again from there (any coordinator answers reads; a standby's view
 * is about a second behind the leader).  Past that the watch fails as
 * before (exit 6).  A watch is a read: sending it again is always safe.
 *
 * Ctrl-C (or SIGTERM) while following: a thread waits for the signal
 * (blocked in every other thread by dctl_interrupt_setup() before the gRPC
 * threads exist), cancels the stream and the watch ends with exit 130.  The
 * job goes on in the coordinator; with --cancel-on-interrupt droverctl
 * first asks the coordinator to cancel it (CancelJob).  A second signal
 * exits at once.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "cleanup.h"
#include "coord-enums.h"
#include "deadline.h"
#include "droverctl.h"
#include "err.h"
#include "text.h"

/* Every job that is not an evacuation shows as a migration. */
const char *dctl_job_kind(int k) {
        return coord_job_kind_to_string(k == COORD_JOB_KIND_EVACUATE ? k : COORD_JOB_KIND_MIGRATE);
}

JsonValue *dctl_job_json(const Drover__V1__Job *j) {
        JsonValue *x = json_new_object(), *subs = json_new_array(), *hist = json_new_array();
        json_add_string(x, "id", j->id);
        json_add_string(x, "kind", dctl_job_kind(j->kind));
        json_add_string(x, "phase", coord_job_phase_to_string(j->phase));
        json_add_string(x, "host", j->host);
        json_add_string(x, "error", j->error);
        json_add_i64(x, "created_unix_ms", (int64_t) j->created_unix_ms);
        json_add_i64(x, "finished_unix_ms", (int64_t) j->finished_unix_ms);
        json_add_i64(x, "succeeded", j->succeeded);
        json_add_i64(x, "failed", j->failed);
        json_add_i64(x, "cancelled", j->cancelled);
        for (size_t i = 0; i < j->n_subtasks; i++) {
                Drover__V1__Subtask *s = j->subtasks[i];
                JsonValue *y = json_new_object();
                json_add_string(y, "guest", s->guest);
                json_add_string(y, "source", s->source);
                json_add_string(y, "destination", s->destination);
                json_add_string(y, "phase", coord_subtask_phase_to_string(s->phase));
                json_add_i64(y, "started_unix_ms", (int64_t) s->started_unix_ms);
                json_add_i64(y, "finished_unix_ms", (int64_t) s->finished_unix_ms);
                json_add_i64(y, "downtime_ms", (int64_t) s->downtime_ms);
                json_add_i64(y, "measured_downtime_ms", (int64_t) s->measured_downtime_ms);
                json_add_i64(y, "transferred_bytes", (int64_t) s->transferred_bytes);
                json_add_i64(y, "guest_memory_bytes", (int64_t) s->guest_memory_bytes);
                json_add_i64(y, "multifd_bytes", (int64_t) s->multifd_bytes);
                json_add_i64(y, "multifd_channels", s->multifd_channels);
                json_add_string(y, "compression", mig_compression_to_string((MigCompression) s->compression));
                json_add_i64(y, "disk_bytes", (int64_t) s->disk_bytes);
                if (s->stats && s->stats->disk_total_bytes) {
                        json_add_i64(y, "disk_total_bytes", (int64_t) s->stats->disk_total_bytes);
                        json_add_i64(y, "disk_transferred_bytes", (int64_t) s->stats->disk_transferred_bytes);
                }
                json_add_string(y, "reason", s->reason);
                json_add_string(y, "error", s->error);
                json_add_string(y, "op_id", s->op_id);
                json_append(subs, y);
        }
        json_add(x, "subtasks", subs);
        for (size_t i = 0; i < j->n_history; i++) {
                JsonValue *e = json_new_object();
                json_add_i64(e, "time_unix_ms", (int64_t) j->history[i]->time_unix_ms);
                json_add_string(e, "text", j->history[i]->text);
                json_append(hist, e);
        }
        json_add(x, "history", hist);
        return x;
}

int dctl_job_exit(const Drover__V1__Job *j) {
        if (j->phase == DROVER__V1__JOB_PHASE__JOB_PHASE_SUCCEEDED)
                return DCTL_EXIT_OK;
        if (j->phase == DROVER__V1__JOB_PHASE__JOB_PHASE_FAILED && j->succeeded == 0)
                return DCTL_EXIT_FAILED;
        if (j->phase == DROVER__V1__JOB_PHASE__JOB_PHASE_FAILED || j->phase == DROVER__V1__JOB_PHASE__JOB_PHASE_CANCELLED)
                return DCTL_EXIT_PARTIAL;
        return DCTL_EXIT_OK;
}

/* The interrupt thread's state.  lock: intr.lock for both fields. */
static struct {
        pthread_mutex_t lock;
        bool interrupted;
        RpcStream *stream; /* the open watch, to cancel */
} intr = { .lock = PTHREAD_MUTEX_INITIALIZER };

static void *interrupt_thread(void *arg) {
        sigset_t *set = arg;
        for (int n = 0;; n++) {
                int sig;
                if (sigwait(set, &sig) != 0)
                        continue;
                if (n > 0)
                        _exit(DCTL_EXIT_INTERRUPTED); /* a second Ctrl-C: do not wait for anything */
                pthread_mutex_lock(&intr.lock);
                intr.interrupted = true;
                if (intr.stream)
                        rpc_stream_cancel(intr.stream);
                pthread_mutex_unlock(&intr.lock);
        }
        return NULL;
}

void dctl_interrupt_setup(void) {
        static sigset_t set;
        pthread_t t;
        sigemptyset(&set);
        sigaddset(&set, SIGINT);
        sigaddset(&set, SIGTERM);
        if (pthread_sigmask(SIG_BLOCK, &set, NULL) != 0 || pthread_create(&t, NULL, interrupt_thread, &set) != 0) {
                pthread_sigmask(SIG_UNBLOCK, &set, NULL); /* Ctrl-C kills, as without a watch */
                return;
        }
        pthread_detach(t);
}

/* Rank of a guest's row on the live display: smaller is shown first. */
static int row_rank(int phase) {
        switch (phase) {
        case DROVER__V1__SUBTASK_PHASE__SUBTASK_PHASE_MIGRATING: return 0;
        case DROVER__V1__SUBTASK_PHASE__SUBTASK_PHASE_FAILED:
        case DROVER__V1__SUBTASK_PHASE__SUBTASK_PHASE_BLOCKED: return 1;
        case DROVER__V1__SUBTASK_PHASE__SUBTASK_PHASE_CANCELLED: return 2;
        case DROVER__V1__SUBTASK_PHASE__SUBTASK_PHASE_SUCCEEDED: return 4;
        default: return 3; /* queued */
        }
}

void dctl_human_bytes(double b, char *buf, size_t size) {
        if (b >= 1 << 30)
                snprintf(buf, size, "%.1f GiB", b / (1 << 30));
        else
                snprintf(buf, size, "%.0f MiB", b / (1 << 20));
}

/* The row of guest @s in @line.  A migration copying its local disks
 * (before its memory) shows that copy's progress. */
static void format_row(const Drover__V1__Subtask *s, char *line, size_t size) {
        char detail[160] = "";
        const Drover__V1__MigrationStats *st = s->stats;
        bool migrating = s->phase == DROVER__V1__SUBTASK_PHASE__SUBTASK_PHASE_MIGRATING;
        if (migrating && st && st->disk_total_bytes && st->disk_transferred_bytes < st->disk_total_bytes) {
                char done[32], total[32];
                dctl_human_bytes((double) st->disk_transferred_bytes, done, sizeof(done));
                dctl_human_bytes((double) st->disk_total_bytes, total, sizeof(total));
                snprintf(detail, sizeof(detail), "%-9s %5.1f%%  %s of %s copied", "disks",
                         100.0 * (double) st->disk_transferred_bytes / (double) st->disk_total_bytes, done, total);
        } else if (migrating && st && st->ram_total_bytes) {
                double total = (double) s->stats->ram_total_bytes, rem = (double) s->stats->ram_remaining_bytes;
                double pct = total > 0 ? 100.0 * (total - MIN(rem, total)) / total : 0;
                double rate = s->stats->mbps * 1e6 / 8; /* bytes/s */
                char eta[32] = "?";
                if (rate > 0)
                        snprintf(eta, sizeof(eta), "%.0f s", rem / rate);
                snprintf(detail, sizeof(detail), "%-9s %5.1f%%  %6.0f Mbit/s  ETA %-6s pass %llu",
                         s->migration_phase[0] ? s->migration_phase : "start", pct, s->stats->mbps, eta,
                         (unsigned long long) s->stats->iteration);
        } else if (s->phase == DROVER__V1__SUBTASK_PHASE__SUBTASK_PHASE_SUCCEEDED) {
                char tx[32];
                dctl_human_bytes((double) s->transferred_bytes, tx, sizeof(tx));
                size_t n = text_append(detail, sizeof(detail), 0, "downtime %llu ms (%llu ms measured)  %s in %.1f s",
                                       (unsigned long long) s->downtime_ms,
                                       (unsigned long long) s->measured_downtime_ms, tx,
                                       (double) (s->finished_unix_ms - s->started_unix_ms) / 1000.0);
                if (s->disk_bytes) {
                        dctl_human_bytes((double) s->disk_bytes, tx, sizeof(tx));
                        text_append(detail, sizeof(detail), n, ", disks %s", tx);
                }
        } else if (row_rank(s->phase) == 1 || row_rank(s->phase) == 2)
                snprintf(detail, sizeof(detail), "%.150s", s->error[0] ? s->error : s->reason);
        else if (s->phase == DROVER__V1__SUBTASK_PHASE__SUBTASK_PHASE_QUEUED)
                snprintf(detail, sizeof(detail), "waiting for admission (est. %.1f s)", s->estimated_s);
        snprintf(line, size, "  %-18s %-10s -> %-10s %-9s %s", s->guest, s->source, s->destination,
                 coord_subtask_phase_to_string(s->phase), detail);
}

static void format_summary(const Drover__V1__Job *j, char *line, size_t size) {
        uint64_t now = wall_ns() / NSEC_PER_MSEC;
        double el = (double) ((j->finished_unix_ms ? j->finished_unix_ms : now) - j->created_unix_ms) / 1000.0;
        snprintf(line, size, "%s %s %s: %s  %u/%zu done, %u failed, %u cancelled  %.1f s", j->id, dctl_job_kind(j->kind),
                 j->host, coord_job_phase_to_string(j->phase), j->succeeded, j->n_subtasks, j->failed, j->cancelled, el);
}

void dctl_render_plain(const Drover__V1__Job *j) {
        char line[512];
        format_summary(j, line, sizeof(line));
        printf("%s\n", line);
        for (size_t i = 0; i < j->n_subtasks; i++) {
                format_row(j->subtasks[i], line, sizeof(line));
                printf("%s\n", line);
        }
        fflush(stdout);
}

/* Print one line of the live display: cleared first and cut to the
 * terminal's width (never at a UTF-8 continuation byte), since a line that
 * wrapped would take two rows and the next redraw, which moves the cursor
 * up one row per line, would leave stale copies behind.  @cols 0: whole. */
static void put_line(int cols, const char *text) {
        size_t len = strlen(text);
        if (cols > 1 && len > (size_t) cols - 1) {
                len = (size_t) cols - 1;
                while (len > 0 && ((unsigned char) text[len] & 0xC0) == 0x80)
                        len--;
        }
        printf("\033[2K%.*s\n", (int) len, text);
}

static int by_rank(const void *a, const void *b, void *arg) {
        const Drover__V1__Job *j = arg;
        size_t x = *(const size_t *) a, y = *(const size_t *) b;
        int rx = row_rank(j->subtasks[x]->phase), ry = row_rank(j->subtasks[y]->phase);
        return rx != ry ? rx - ry : (x > y) - (x < y); /* stable: the job's order within a rank */
}

/* While the job runs, at most the terminal's rows less one are printed
 * (lines scrolled off the top cannot be redrawn); the last redraw (the job
 * ended) is printed whole. */
int dctl_render_live(const Drover__V1__Job *j, int prev_lines) {
        char line[512];
        int lines = 0, cols = 0, rows = 0;
        struct winsize ws;
        if (ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) == 0) {
                cols = ws.ws_col;
                rows = ws.ws_row;
        }
        bool final = coord_job_phase_is_final(j->phase);
        if (prev_lines)
                printf("\033[%dA\033[J", prev_lines); /* up to the summary, and clear what was below */
        if (final)
                cols = 0; /* nothing is drawn over it: it may wrap */
        format_summary(j, line, sizeof(line));
        put_line(cols, line);
        lines++;
        size_t n = j->n_subtasks, shown = n;
        if (!final && rows > 3 && 1 + n > (size_t) rows - 1)
                shown = (size_t) rows - 3; /* the summary, the guests shown, the "more" line */
        size_t *order = malloc((n + 1) * sizeof(*order));
        if (!order)
                shown = 0;
        for (size_t i = 0; order && i < n; i++)
                order[i] = i;
        if (order)
                qsort_r(order, n, sizeof(*order), by_rank, (void *) j);
        for (size_t i = 0; i < shown; i++) {
                format_row(j->subtasks[order[i]], line, sizeof(line));
                put_line(cols, line);
                lines++;
        }
        if (shown < n) {
                unsigned by[5] = { 0 };
                for (size_t i = shown; i < n; i++)
                        by[row_rank(j->subtasks[order ? order[i] : i]->phase)]++;
                snprintf(line, sizeof(line), "  ... and %zu more guests: %u done, %u queued, %u failed or blocked, %u cancelled "
                         "(droverctl job %s shows all)", n - shown, by[4], by[3], by[1], by[2], j->id);
                put_line(cols, line);
                lines++;
        }
        free(order);
        fflush(stdout);
        return lines;
}

/* FNV-1a over every guest's name and phase and the job's phase: what a
 * piped watch compares to decide whether to print again (a text of them
 * would need a buffer as large as the job). */
static uint64_t phases_hash(const Drover__V1__Job *j) {
        uint64_t h = 14695981039346656037ULL;
        for (size_t i = 0; i <= j->n_subtasks; i++) {
                const char *name = i < j->n_subtasks ? j->subtasks[i]->guest : "";
                int phase = i < j->n_subtasks ? (int) j->subtasks[i]->phase : (int) j->phase;
                for (const char *p = name; *p; p++)
                        h = (h ^ (unsigned char) *p) * 1099511628211ULL;
                h = (h ^ (uint64_t) (unsigned) phase ^ 0x100) * 1099511628211ULL;
        }
        return h;
}

/* Ctrl-C ended the watch of job @id: say what happens to it, cancel it
 * when asked. */
static int interrupted(const char *id) {
        if (!dctl_opt.cancel_on_interrupt) {
                fprintf(stderr,
                        "droverctl: interrupted; job %s goes on in the coordinator "
                        "(droverctl watch %s follows it, droverctl cancel %s cancels it)\n",
                        id, id, id);
                return DCTL_EXIT_INTERRUPTED;
        }
        Drover__V1__JobRef req = DROVER__V1__JOB_REF__INIT;
        Drover__V1__Job *j;
        req.id = (char *) id;
        fprintf(stderr, "droverctl: interrupted; cancelling job %s (running migrations are aborted, sources resume)\n", id);
        int rc = dctl_call("cancel", "CancelJob", &req.base, (ProtobufCMessage **) &j);
        if (rc)
                return rc;
        fprintf(stderr, "droverctl: job %s is %s\n", id, coord_job_phase_to_string(j->phase));
        drover__v1__job__free_unpacked(j, NULL);
        return DCTL_EXIT_INTERRUPTED;
}

/* @st is the stream to follow now (the interrupt thread cancels it). */
static void follow_stream(RpcStream *st) {
        pthread_mutex_lock(&intr.lock);
        intr.stream = st;
        if (intr.interrupted)
                rpc_stream_cancel(st);
        pthread_mutex_unlock(&intr.lock);
}

/* Whether the watch's stream broke because there is no coordinator at its
 * end (UNAVAILABLE: none listening, or it died), not because of an answer
 * about the job or a Ctrl-C: worth following elsewhere. */
static bool interrupted_now(void) {
        pthread_mutex_lock(&intr.lock);
        bool stopped = intr.interrupted;
        pthread_mutex_unlock(&intr.lock);
        return stopped;
}

static bool stream_lost(int r, RpcStream *st) {
        const RpcStatus *s = rpc_stream_status(st);
        return r < 0 && !interrupted_now() && (r == -EAGAIN || (s && s->code == RPC_UNAVAILABLE));
}

int dctl_watch(const char *id) {
        RpcStream *st;
        int r = dctl_watch_open(id, &st);
        if (r)
                return r;
        follow_stream(st);

        bool tty = isatty(STDOUT_FILENO) && !dctl_opt.json;
        bool got = false, ever = false; /* a message on this stream; on any */
        int lines = 0, code = DCTL_EXIT_ERROR;
        uint64_t last = 0, lost_at = 0;
        for (;;) {
                Drover__V1__Job *j;
                r = rpc_stream_read(st, (ProtobufCMessage **) &j);
                if (r <= 0 && stream_lost(r, st)) {
                        /* never connected: the next address, as a unary call
                         * moves on; connected once (a leader died): any
                         * coordinator answers reads, each in turn for
                         * DCTL_WATCH_FOLLOW_MS from the loss */
                        RpcStream *again = NULL;
                        int q;
                        if (!ever)
                                q = dctl_watch_next(id, false, &again);
                        else {
                                if (got)
                                        lost_at = now_ms();
                                else
                                        sleep_ms(200); /* a re-opened stream broke at once: no tight loop */
                                while ((q = dctl_watch_next(id, true, &again)) == -EAGAIN &&
                                       now_ms() - lost_at < DCTL_WATCH_FOLLOW_MS && !interrupted_now())
                                        sleep_ms(200);
                        }
                        if (q >= 0) {
                                follow_stream(again);
                                rpc_stream_free(st);
                                st = again;
                                got = false;
                                continue;
                        }
                }
                if (r <= 0)
                        break;
                if (lost_at) {
                        fprintf(stderr, "droverctl: lost the coordinator; following the job on %s\n", dctl_address());
                        lines = 0; /* the display again, below the line */
                        last = 0;
                        lost_at = 0;
                }
                got = ever = true;
                if (dctl_opt.json)
                        dctl_print_json(dctl_job_json(j));
                else if (tty)
                        lines = dctl_render_live(j, lines);
                else if (phases_hash(j) != last) {
                        /* piped: the job again when a phase changed; every
                         * guest counts, however many and however long */
                        dctl_render_plain(j);
                        last = phases_hash(j);
                }
                code = coord_job_phase_is_final(j->phase) ? dctl_job_exit(j) : DCTL_EXIT_OK;
                drover__v1__job__free_unpacked(j, NULL);
        }
        pthread_mutex_lock(&intr.lock);
        bool stopped = intr.interrupted;
        intr.stream = NULL;
        pthread_mutex_unlock(&intr.lock);
        if (stopped && r < 0)
                code = interrupted(id);
        else if (r < 0)
                code = dctl_fail("watch", r, rpc_stream_status(st));
        rpc_stream_free(st);
        return code;
}

int dctl_cmd_watch(int argc, char **argv) {
        return dctl_watch(argv[0]);
}

/* The coordinator's calls to agents (the only coordinator code besides
 * coord-rpc.c that sees protobuf-c or the gRPC client).  One AgentLink per
 * host, shared by the coordinator's threads; every call has a deadline. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "migparams.h"
#include "migtypes.h"

typedef struct AgentLink AgentLink;

typedef struct LinkTls {
        const char *cert, *key, *ca; /* NULL cert: plaintext (loopback/unix only) */
} LinkTls;

int agent_link_open(const char *addr, const LinkTls *tls, AgentLink **ret);
void agent_link_close(AgentLink *l);

typedef struct AgentGuestInfo {
        char name[64];
        char uuid[37];
        int state;          /* VmState-like: GuestState of agent.proto */
        uint64_t memory_mib;
        uint32_t vcpus;
        char cpu_model[64];
        char async_job[24];
        uint64_t dirty_pages_rate;
        bool unmanaged;     /* a QEMU the agent does not manage (GuestSummary.unmanaged) */
        uint64_t local_disk_bytes; /* its local disks, copied on migration (GuestSummary.local_disk_bytes) */
} AgentGuestInfo;

typedef struct AgentHostInfo {
        uint64_t memory_mib;
        uint32_t cpus;
        char cpu[128];
        uint64_t guests_memory_mib;
        uint32_t guests_vcpus;
        size_t n_guests;
        AgentGuestInfo *guests; /* malloc'ed */
} AgentHostInfo;

int agent_link_stats(AgentLink *l, int64_t timeout_ms, AgentHostInfo *ret);
void agent_host_info_clear(AgentHostInfo *h);

typedef struct LinkMigResult {
        char op[64];
        bool done, success;
        char error[512];
        char phase[24];
        uint64_t total_ms, downtime_ms, measured_downtime_ms, transferred;
        char steps[512];      /* newline-separated */
        /* the stream and its bytes (MigrationResult 15-19) */
        uint64_t guest_memory_bytes, multifd_bytes, disk_bytes;
        uint32_t multifd_channels; /* 0 = not known */
        int compression;           /* MigCompression */
} LinkMigResult;

/* Migrate on the source: the destination agent picks where its QEMU
 * listens (its own migration_address), so nothing here says so. */
int agent_link_migrate(AgentLink *l, const char *guest, const char *op, const char *dest_addr, const MigParams *p,
                       int64_t timeout_ms);
/* -ENOENT when the agent knows no migration of that guest. */
int agent_link_get_migration(AgentLink *l, const char *guest, int64_t timeout_ms, LinkMigResult *ret);
int agent_link_abort(AgentLink *l, const char *guest, int64_t timeout_ms);
/* Change the bandwidth of a running outgoing migration. */
int agent_link_tune(AgentLink *l, const char *guest, uint64_t bandwidth, int64_t timeout_ms);

typedef struct LinkGuestStatus {
        int state;           /* GuestState */
        char reason[32];
        char async_job[24];
        char phase[24];
        int pid;
        char mig_status[24]; /* QEMU's migration status */
        uint64_t ram_total, ram_remaining, ram_transferred, dirty_pages_rate, expected_downtime_ms;
        double mbps;
        uint64_t iteration;
        uint64_t disk_total, disk_transferred; /* local disks' copy (MigrationStats 16-17); 0 = none */
} LinkGuestStatus;

/* -ENOENT when the guest is not defined there. */
int agent_link_get_guest(AgentLink *l, const char *guest, int64_t timeout_ms, LinkGuestStatus *ret);

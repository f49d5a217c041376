/* ha-fence-probe: write to the etcd store under a given leader fence, as a
 * deposed coordinator would, and say whether the store refused it.
 *
 * The ha suite runs it in the old leader's namespace after its link healed
 * (test-ha.c, the cut test), with the old leader's key and create_revision
 * from its log ("election: leading (key K, revision R)"): the same store
 * code, the same TLS client, the same fence as that coordinator's writes.
 * It reads job JOB first (so a refusal cannot be a connection failure),
 * then writes it back unchanged with job_update.
 *
 * Usage: ha-fence-probe ENDPOINTS CA CERT KEY PREFIX LEADER_KEY REVISION JOB
 * Prints one line; exit 0: refused with -ESTALE (the fence held), 1: the
 * write was applied, 2: anything else (the message says what).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "etcd.h"
#include "store.h"

int main(int argc, char **argv) {
        if (argc != 9) {
                fprintf(stderr, "usage: ha-fence-probe ENDPOINTS CA CERT KEY PREFIX LEADER_KEY REVISION JOB\n");
                return 2;
        }
        RpcTls tls = { .ca_file = argv[2], .cert_file = argv[3], .key_file = argv[4] };
        EtcdOptions o = { .endpoints = argv[1], .tls = &tls };
        Etcd *e = NULL;
        Store *s = NULL;
        StoreJob j;
        int r;
        if ((r = etcd_open(&o, &e)) < 0) {
                printf("probe: etcd client: %s\n", err_msg());
                return 2;
        }
        if ((r = store_etcd_open(e, argv[5], &s)) < 0) {
                printf("probe: etcd store: %s\n", err_msg());
                etcd_close(e);
                return 2;
        }
        int rc = 2;
        if ((r = s->ops->job_get(s, argv[8], &j)) < 0)
                printf("probe: job_get %s: %s\n", argv[8], err_msg());
        else if ((r = s->ops->fence(s, argv[6], strtoll(argv[7], NULL, 10))) < 0)
                printf("probe: fence: %s\n", err_msg());
        else if ((r = s->ops->job_update(s, &j)) == -ESTALE) {
                printf("probe: job_update refused: %s\n", err_msg());
                rc = 0;
        } else if (r < 0)
                printf("probe: job_update failed otherwise (%s): %s\n", strerror(-r), err_msg());
        else {
                printf("probe: job_update APPLIED under the fence of %s revision %s\n", argv[6], argv[7]);
                rc = 1;
        }
        store_close(s);
        etcd_close(e);
        return rc;
}

/* Shared by cluster.c and cluster-coord.c only: where cluster.c made the
 * cluster's certificates. */
#pragma once

/* The folder holding ca.crt, host-a.crt/.key ... (role agent),
 * coordinator.crt/.key (role coordinator) and test-client.crt/.key (role
 * operator); valid after cluster_up, "" before. */
const char *cluster_tls_dir(void);

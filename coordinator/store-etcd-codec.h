/* The etcd store's records as JSON values (store-etcd-codec.c): every
 * field of the record, one JSON object.  Internal to store-etcd.c.
 */
#pragma once

#include "etcd.h"
#include "store-priv.h"

/* @rec as a malloc'ed JSON object text in *ret: 0 or -ENOMEM. */
int store_etcd_host_encode(const StoreHost *h, char **ret);
int store_etcd_job_encode(const StoreJob *j, char **ret);
int store_etcd_sub_encode(const StoreSubtask *t, char **ret);
int store_etcd_event_encode(const StoreEvent *e, char **ret);

/* Fill the record (zeroed first) from the value of @kv, parsed strictly
 * and checked as the store checks its input: 0, or -EIO "store etcd:
 * record KEY is damaged: ...". */
int store_etcd_host_decode(const EtcdKv *kv, StoreHost *h);
int store_etcd_job_decode(const EtcdKv *kv, StoreJob *j);
int store_etcd_sub_decode(const EtcdKv *kv, StoreSubtask *t);
int store_etcd_event_decode(const EtcdKv *kv, StoreEvent *e);

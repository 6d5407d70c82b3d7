/* bridge.c - the bridge's backend slot: opened lazily from the effective configuration,
 * held by each call for its duration, swapped by initialize without pulling a backend from
 * under a running call. Knows nothing of JSON-RPC. Layer: methods/backend glue.
 * Invariant: under br->lock, br->backend_refs counts the calls holding br->backend, and
 * every backend on br->retired is held by at least one call. */
#include "bridge/methods/methods.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "common/assert.h"
#include "common/log.h"
#include "common/mem.h"
#include "common/thread.h"

struct bridge_retired {
  struct backend *be;
  unsigned refs;
  struct list_node link; /* in br->retired */
};

/* br->retired, made a ring on first use: a zeroed struct bridge is a valid one (main and
 * the tests only set what they configure). Caller holds br->lock. */
static struct list *retired(struct bridge *br) {
  if (!br->retired.head.next)
    list_init(&br->retired);
  return &br->retired;
}

static void backend_close(struct backend *be) {
  if (be && be->ops && be->ops->close)
    be->ops->close(be);
}

static int str_eq(const char *a, const char *b) {
  if (!a || !b)
    return a == b;
  return strcmp(a, b) == 0;
}

static void config_free_strings(struct backend_config *cfg) {
  free((char *)cfg->base_url);
  free((char *)cfg->api_key);
  free((char *)cfg->cacert);
  cfg->base_url = NULL;
  cfg->api_key = NULL;
  cfg->cacert = NULL;
}

struct backend *bridge_backend(struct bridge *br, struct osb_err *err) {
  pthread_mutex_lock(&br->lock);
  if (!br->backend) {
    struct backend_config cfg = br->config;
    if (cfg.max_output == 0)
      cfg.max_output = br->max_output;
    if (cfg.base_url && cfg.base_url[0])
      br->backend = backend_remote_open(&cfg, err);
    else
      br->backend = backend_local_open(&cfg, err);
    br->backend_refs = 0;
  }
  struct backend *be = br->backend;
  if (be)
    br->backend_refs++;
  pthread_mutex_unlock(&br->lock);
  return be;
}

/* Drop one hold on be; returns the backend that must now be closed, or NULL. */
static struct backend *backend_release(struct bridge *br, struct backend *be) {
  struct backend *to_close = NULL;
  pthread_mutex_lock(&br->lock);
  if (be == br->backend) {
    OSB_ASSERT(br->backend_refs > 0);
    br->backend_refs--;
  } else {
    int found = 0;
    struct list *l = retired(br);
    for (struct list_node *n = LIST_FIRST(l); n != LIST_END(l); n = n->next) {
      struct bridge_retired *r = LIST_ENTRY(n, struct bridge_retired, link);
      if (r->be != be)
        continue;
      found = 1;
      OSB_ASSERT(r->refs > 0);
      if (--r->refs == 0) {
        list_remove(n);
        to_close = r->be;
        free(r);
      }
      break;
    }
    OSB_ASSERT(found); /* every held backend is current or retired */
  }
  pthread_mutex_unlock(&br->lock);
  return to_close;
}

void bridge_backend_put(struct bridge *br, struct backend *be) {
  if (!be)
    return;
  backend_close(backend_release(br, be)); /* outside the lock: closing may kill processes */
}

static void *close_thread(void *arg) {
  backend_close(arg);
  return NULL;
}

void bridge_backend_put_deferred(struct bridge *br, struct backend *be) {
  if (!be)
    return;
  struct backend *to_close = backend_release(br, be);
  if (!to_close)
    return;
  if (thread_spawn(close_thread, to_close, 0) != 0)
    log_warn("cannot close a retired backend (no thread); leaking it");
}

int bridge_reconfigure(struct bridge *br, struct backend_config *config) {
  struct backend *to_close = NULL;
  pthread_mutex_lock(&br->lock);
  struct backend_config *cur = &br->config;
  int same = str_eq(cur->base_url, config->base_url) && cur->grpc_port == config->grpc_port &&
             !cur->grpc_insecure == !config->grpc_insecure &&
             str_eq(cur->api_key, config->api_key) &&
             cur->request_timeout_ms == config->request_timeout_ms &&
             str_eq(cur->cacert, config->cacert) && cur->max_message == config->max_message &&
             cur->max_output == config->max_output && cur->transport == config->transport &&
             cur->network == config->network;
  if (same) {
    pthread_mutex_unlock(&br->lock);
    config_free_strings(config);
    return 0;
  }
  /* The local backend uses none of the remote settings (URL, port, key, timeout): keep it,
   * and its sessions, unless the bridge goes remote or max_output changes. */
  int keep = br->backend && !(cur->base_url && cur->base_url[0]) &&
             !(config->base_url && config->base_url[0]) && cur->max_output == config->max_output &&
             cur->network == config->network;
  config_free_strings(cur);
  *cur = *config;
  memset(config, 0, sizeof *config);
  if (br->backend && !keep) {
    if (br->backend_refs == 0) {
      to_close = br->backend;
    } else {
      struct bridge_retired *r = xcalloc(1, sizeof *r);
      r->be = br->backend;
      r->refs = br->backend_refs;
      list_push_front(retired(br), &r->link);
    }
    br->backend = NULL;
    br->backend_refs = 0;
  }
  pthread_mutex_unlock(&br->lock);
  backend_close(to_close);
  return 1;
}

void bridge_close(struct bridge *br) {
  if (!br)
    return;
  pthread_mutex_lock(&br->lock);
  struct backend *be = br->backend;
  struct list old;
  list_init(&old);
  for (struct list_node *n; (n = list_pop_front(retired(br)));)
    list_push_back(&old, n);
  br->backend = NULL;
  br->backend_refs = 0;
  config_free_strings(&br->config);
  pthread_mutex_unlock(&br->lock);
  backend_close(be);
  for (struct list_node *n; (n = list_pop_front(&old));) {
    struct bridge_retired *r = LIST_ENTRY(n, struct bridge_retired, link);
    backend_close(r->be);
    free(r);
  }
}

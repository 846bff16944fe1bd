/* bridge/map: a small string -> pointer hash table (chained, FNV-1a, grows at load 1) for the
 * hub's channels and the source's Redis subscriptions. Keys are copied; values are borrowed.
 * Threads: whoever owns the map (the loop thread). */
#include <stdlib.h>
#include <string.h>

#include "bridge/bridge_internal.h"

typedef struct entry {
  struct entry *next;
  void *value;
  char key[];
} entry_t;

struct sq_map {
  entry_t **buckets;
  size_t nbuckets, count;
};

static uint64_t hash_key(const char *s) {
  uint64_t h = 1469598103934665603ull;
  for (; *s; s++) h = (h ^ (unsigned char)*s) * 1099511628211ull;
  return h;
}

sq_map_t *sq_map_new(void) {
  sq_map_t *m = calloc(1, sizeof(*m));
  if (!m) return NULL;
  m->nbuckets = 64;
  m->buckets = calloc(m->nbuckets, sizeof(*m->buckets));
  if (!m->buckets) {
    free(m);
    return NULL;
  }
  return m;
}

void sq_map_free(sq_map_t *m) {
  if (!m) return;
  for (size_t i = 0; i < m->nbuckets; i++) {
    entry_t *e = m->buckets[i];
    while (e) {
      entry_t *next = e->next;
      free(e);
      e = next;
    }
  }
  free(m->buckets);
  free(m);
}

void *sq_map_get(const sq_map_t *m, const char *key) {
  for (entry_t *e = m->buckets[hash_key(key) % m->nbuckets]; e; e = e->next)
    if (strcmp(e->key, key) == 0) return e->value;
  return NULL;
}

static void grow(sq_map_t *m) {
  size_t n = m->nbuckets * 2;
  entry_t **nb = calloc(n, sizeof(*nb));
  if (!nb) return; /* longer chains, still correct */
  for (size_t i = 0; i < m->nbuckets; i++) {
    entry_t *e = m->buckets[i];
    while (e) {
      entry_t *next = e->next;
      size_t b = hash_key(e->key) % n;
      e->next = nb[b];
      nb[b] = e;
      e = next;
    }
  }
  free(m->buckets);
  m->buckets = nb;
  m->nbuckets = n;
}

int sq_map_put(sq_map_t *m, const char *key, void *value) {
  entry_t **pp = &m->buckets[hash_key(key) % m->nbuckets];
  for (entry_t *e = *pp; e; e = e->next)
    if (strcmp(e->key, key) == 0) {
      e->value = value;
      return 0;
    }
  size_t len = strlen(key);
  entry_t *e = malloc(sizeof(*e) + len + 1);
  if (!e) return SQ_ENOMEM;
  memcpy(e->key, key, len + 1);
  e->value = value;
  e->next = *pp;
  *pp = e;
  if (++m->count > m->nbuckets) grow(m);
  return 0;
}

void *sq_map_del(sq_map_t *m, const char *key) {
  entry_t **pp = &m->buckets[hash_key(key) % m->nbuckets];
  for (; *pp; pp = &(*pp)->next) {
    entry_t *e = *pp;
    if (strcmp(e->key, key) == 0) {
      void *v = e->value;
      *pp = e->next;
      free(e);
      m->count--;
      return v;
    }
  }
  return NULL;
}

size_t sq_map_count(const sq_map_t *m) {
  return m->count;
}

void sq_map_each(sq_map_t *m, sq_map_each_fn fn, void *data) {
  for (size_t i = 0; i < m->nbuckets; i++) {
    entry_t *e = m->buckets[i];
    while (e) {
      entry_t *next = e->next; /* fn may delete e */
      fn(e->key, e->value, data);
      e = next;
    }
  }
}

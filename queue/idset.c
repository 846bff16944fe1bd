/* queue/idset: a set of job ids (strings), for the session's record of what the worker holds.
 * Chained hash table, grown at load factor 1; ids are copied.
 * Threads: the owner's (the loop thread for the session). */
#include <stdlib.h>
#include <string.h>

#include "queue/queue_internal.h"

typedef struct node {
  struct node *next;
  uint64_t hash;
  char id[];
} node_t;

struct sq_idset {
  node_t **buckets;
  size_t nbuckets; /* a power of two */
  size_t len;
};

static uint64_t hash_id(const char *s) {
  uint64_t h = 1469598103934665603ull; /* FNV-1a */
  for (; *s; s++) h = (h ^ (uint8_t)*s) * 1099511628211ull;
  return h;
}

sq_idset_t *sq_idset_new(void) {
  sq_idset_t *s = calloc(1, sizeof(*s));
  if (!s) return NULL;
  s->nbuckets = 64;
  s->buckets = calloc(s->nbuckets, sizeof(*s->buckets));
  if (!s->buckets) {
    free(s);
    return NULL;
  }
  return s;
}

void sq_idset_free(sq_idset_t *s) {
  if (!s) return;
  for (size_t i = 0; i < s->nbuckets; i++)
    for (node_t *n = s->buckets[i], *next; n; n = next) {
      next = n->next;
      free(n);
    }
  free(s->buckets);
  free(s);
}

static node_t **find(const sq_idset_t *s, const char *id, uint64_t h) {
  node_t **pp = &s->buckets[h & (s->nbuckets - 1)];
  for (; *pp; pp = &(*pp)->next)
    if ((*pp)->hash == h && strcmp((*pp)->id, id) == 0) break;
  return pp;
}

static void grow(sq_idset_t *s) {
  size_t nb = s->nbuckets * 2;
  node_t **b = calloc(nb, sizeof(*b));
  if (!b) return; /* stays correct, only slower */
  for (size_t i = 0; i < s->nbuckets; i++)
    for (node_t *n = s->buckets[i], *next; n; n = next) {
      next = n->next;
      n->next = b[n->hash & (nb - 1)];
      b[n->hash & (nb - 1)] = n;
    }
  free(s->buckets);
  s->buckets = b;
  s->nbuckets = nb;
}

int sq_idset_add(sq_idset_t *s, const char *id) {
  uint64_t h = hash_id(id);
  node_t **pp = find(s, id, h);
  if (*pp) return 0;
  size_t len = strlen(id);
  node_t *n = malloc(sizeof(*n) + len + 1);
  if (!n) return SQ_ENOMEM;
  n->hash = h;
  memcpy(n->id, id, len + 1);
  n->next = NULL;
  *pp = n;
  if (++s->len > s->nbuckets) grow(s);
  return 1;
}

int sq_idset_remove(sq_idset_t *s, const char *id) {
  node_t **pp = find(s, id, hash_id(id));
  if (!*pp) return 0;
  node_t *n = *pp;
  *pp = n->next;
  free(n);
  s->len--;
  return 1;
}

int sq_idset_has(const sq_idset_t *s, const char *id) {
  return *find(s, id, hash_id(id)) != NULL;
}

size_t sq_idset_len(const sq_idset_t *s) {
  return s->len;
}

size_t sq_idset_list(const sq_idset_t *s, const char **out, size_t cap) {
  size_t k = 0;
  for (size_t i = 0; i < s->nbuckets; i++)
    for (node_t *n = s->buckets[i]; n; n = n->next) {
      if (k < cap) out[k] = n->id;
      k++;
    }
  return k;
}

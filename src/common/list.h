/* list.h - the one intrusive doubly linked list (a ring through a sentinel): embed a
 * struct list_node in the element, get the element back with LIST_ENTRY. No allocation,
 * no locking: the owner of the list guards it. Layer: common. */
#ifndef OSB_COMMON_LIST_H
#define OSB_COMMON_LIST_H

#include <stddef.h>

struct list_node {
  struct list_node *prev, *next;
};

struct list {
  struct list_node head; /* sentinel */
};

#define LIST_ENTRY(node, type, member) ((type *)((char *)(node) - offsetof(type, member)))

static inline void list_init(struct list *l) {
  l->head.prev = l->head.next = &l->head;
}

static inline int list_empty(const struct list *l) {
  return l->head.next == &l->head;
}

static inline void list_push_back(struct list *l, struct list_node *n) {
  n->prev = l->head.prev;
  n->next = &l->head;
  l->head.prev->next = n;
  l->head.prev = n;
}

static inline void list_push_front(struct list *l, struct list_node *n) {
  n->next = l->head.next;
  n->prev = &l->head;
  l->head.next->prev = n;
  l->head.next = n;
}

/* Unlink n (which must be on a list); n's links are cleared. */
static inline void list_remove(struct list_node *n) {
  n->prev->next = n->next;
  n->next->prev = n->prev;
  n->prev = n->next = NULL;
}

static inline int list_linked(const struct list_node *n) {
  return n->next != NULL;
}

/* The first node, unlinked; NULL when empty. */
static inline struct list_node *list_pop_front(struct list *l) {
  if (list_empty(l))
    return NULL;
  struct list_node *n = l->head.next;
  list_remove(n);
  return n;
}

/* Move all of src's nodes, in order, to the end of dst; src is left empty. */
static inline void list_splice_back(struct list *dst, struct list *src) {
  if (list_empty(src))
    return;
  src->head.next->prev = dst->head.prev;
  dst->head.prev->next = src->head.next;
  src->head.prev->next = &dst->head;
  dst->head.prev = src->head.prev;
  list_init(src);
}

/* for (struct list_node *n = LIST_FIRST(l), *nx; n != LIST_END(l); n = nx) { nx = n->next; } */
#define LIST_FIRST(l) ((l)->head.next)
#define LIST_END(l) (&(l)->head)

#endif

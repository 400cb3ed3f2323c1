/* SPDX-License-Identifier: MIT */
/*
 * An intrusive, circular, doubly linked list (the kernel's list.h, nginx's ngx_queue.h): the
 * node lives inside its owner, so linking never allocates and unlinking is O(1) without a
 * walk. A list head is a node that belongs to no element; sl_container_of() gets from a node
 * back to the struct that embeds it.
 *
 *	struct conn { ...; struct sl_list link; };
 *	struct sl_list conns = SL_LIST_INIT(conns);	(or sl_list_init(&conns))
 *	sl_list_add_tail(&conns, &c->link);
 *	sl_list_for_each_safe(c, tmp, &conns, link)
 *		if (done(c))
 *			sl_list_del(&c->link);
 *
 * A node is either linked or initialised-and-unlinked (points at itself): sl_list_del() leaves
 * it unlinked, so deleting twice is harmless and sl_list_linked() tells the two apart. A node
 * that was only zeroed (calloc) is neither: sl_list_init() it, or link it, before anything
 * else.
 *
 * Threading: the list is as thread-safe as its owner (no locks here); nothing blocks.
 */
#ifndef SL_LIST_H
#define SL_LIST_H

#include <stddef.h>

/* The struct of @type whose @member is at @ptr (the kernel's container_of). */
#define sl_container_of(ptr, type, member) ((type *)((char *)(ptr)-offsetof(type, member)))

struct sl_list {
	struct sl_list *next, *prev;
};

/* For a head defined statically or on the stack: struct sl_list h = SL_LIST_INIT(h); */
#define SL_LIST_INIT(name)       \
	{                        \
		&(name), &(name) \
	}

static inline void sl_list_init(struct sl_list *l)
{
	l->next = l;
	l->prev = l;
}

/* 1 when the list headed by @head has no element. */
static inline int sl_list_empty(const struct sl_list *head)
{
	return head->next == head;
}

/* 1 when @node is in a list, 0 after sl_list_init() or sl_list_del(). */
static inline int sl_list_linked(const struct sl_list *node)
{
	return node->next != node;
}

static inline void sl_list_insert_between(struct sl_list *node, struct sl_list *prev,
					  struct sl_list *next)
{
	node->next = next;
	node->prev = prev;
	prev->next = node;
	next->prev = node;
}

/* Links @node first in @head's list. @node must not be linked. */
static inline void sl_list_add(struct sl_list *head, struct sl_list *node)
{
	sl_list_insert_between(node, head, head->next);
}

/* Links @node last in @head's list. @node must not be linked. */
static inline void sl_list_add_tail(struct sl_list *head, struct sl_list *node)
{
	sl_list_insert_between(node, head->prev, head);
}

/* Unlinks @node in O(1) and leaves it unlinked (idempotent). */
static inline void sl_list_del(struct sl_list *node)
{
	node->prev->next = node->next;
	node->next->prev = node->prev;
	sl_list_init(node);
}

/* The element of type @type that holds @node in @member. */
#define sl_list_entry(node, type, member) sl_container_of(node, type, member)
/* The first (last) element of a list that is not empty. */
#define sl_list_first(head, type, member) sl_list_entry((head)->next, type, member)
#define sl_list_last(head, type, member) sl_list_entry((head)->prev, type, member)

/* Walks the elements: @pos is a pointer to the element type. The body must not unlink @pos
 * (use sl_list_for_each_safe for that). */
#define sl_list_for_each(pos, head, member)                                                       \
	for (pos = sl_list_entry((head)->next, __typeof__(*pos), member); &pos->member != (head); \
	     pos = sl_list_entry(pos->member.next, __typeof__(*pos), member))

/* Walks the elements; the body may unlink or free @pos (not the next one: @tmp holds it). */
#define sl_list_for_each_safe(pos, tmp, head, member)                        \
	for (pos = sl_list_entry((head)->next, __typeof__(*pos), member),    \
	    tmp = sl_list_entry(pos->member.next, __typeof__(*pos), member); \
	     &pos->member != (head);                                         \
	     pos = tmp, tmp = sl_list_entry(tmp->member.next, __typeof__(*pos), member))

#endif

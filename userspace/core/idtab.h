/* SPDX-License-Identifier: MIT */
/*
 * A table of pointers by small integer id (a sandbox id): an array that grows (doubling) to
 * hold the largest id put, so a lookup is one bounds check and one load. Id 0 is never an
 * entry. Used where traffic must find its owner per packet or per accept (the shared DNS and
 * proxy listeners find a sandbox's listener by the id the kernel marked).
 *
 *	struct sl_idtab t = { 0 };
 *	if (sl_idtab_put(&t, id, l)) ...	(-ENOMEM, or -EEXIST: the id has one)
 *	l = sl_idtab_get(&t, id);		(NULL: none)
 *	sl_idtab_del(&t, id);
 *	free(t.v);
 *
 * Threading: as thread-safe as its owner (no locks); nothing blocks.
 */
#ifndef SL_IDTAB_H
#define SL_IDTAB_H

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

struct sl_idtab {
	void **v;
	uint32_t cap; /* ids 0..cap-1 have a slot */
	unsigned n; /* entries */
};

static inline void *sl_idtab_get(const struct sl_idtab *t, uint32_t id)
{
	return id && id < t->cap ? t->v[id] : NULL;
}

static inline int sl_idtab_put(struct sl_idtab *t, uint32_t id, void *p)
{
	if (!id || !p)
		return -EINVAL;
	if (id >= t->cap) {
		uint32_t cap = t->cap ? t->cap : 64;
		void **v;

		while (cap <= id)
			cap *= 2;
		v = realloc(t->v, cap * sizeof(*v));
		if (!v)
			return -ENOMEM;
		memset(v + t->cap, 0, (cap - t->cap) * sizeof(*v));
		t->v = v;
		t->cap = cap;
	}
	if (t->v[id])
		return -EEXIST;
	t->v[id] = p;
	t->n++;
	return 0;
}

static inline void sl_idtab_del(struct sl_idtab *t, uint32_t id)
{
	if (id && id < t->cap && t->v[id]) {
		t->v[id] = NULL;
		t->n--;
	}
}

#endif

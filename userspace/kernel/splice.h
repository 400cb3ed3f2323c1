/* SPDX-License-Identifier: MIT */
/*
 * The kernel splice of passthrough connections: a sockhash and its verdict (see splice.c).
 *
 * Threading: a struct sl_splice belongs to the thread of the loop of its proxy (one per
 * worker; no lock). sl_splice_open() loads
 * a BPF program at startup; the other calls are map syscalls that do not sleep.
 */
#ifndef SL_SPLICE_H
#define SL_SPLICE_H

#include <stddef.h>
#include <stdint.h>

struct sl_splice;

/* A spliced pair, as sl_splice_join() made it. */
struct sl_splice_pair {
	uint64_t cookie[2]; /* SO_COOKIE of the two sockets, in the order given */
};

/* Loads the verdict program and its maps and attaches the program to the sockhash. NULL
 * with a reason in @err (the caller relays passthrough bytes itself then). */
struct sl_splice *sl_splice_open(char *err, size_t errlen);
/* Closes the maps and the program. Accepts NULL. */
void sl_splice_close(struct sl_splice *s);

/*
 * Splices the connected TCP sockets @fd[0] and @fd[1]: from the return on, every byte one
 * receives goes out of the other in the kernel and neither is readable in userspace.
 * @fd[0] is inserted first: give the socket that may receive first as @fd[1]'s peer, i.e.
 * insert the one nobody writes to yet first. 0 or -errno (nothing is left in the maps).
 */
int sl_splice_join(struct sl_splice *s, const int fd[2], struct sl_splice_pair *p);
/* Removes what sl_splice_join() added (closing the sockets removes them from the sockhash
 * too). Accepts a pair of zero cookies. */
void sl_splice_part(struct sl_splice *s, struct sl_splice_pair *p);
/* Bytes the kernel has taken from socket @i of @p and sent to the other, so far. */
uint64_t sl_splice_moved(struct sl_splice *s, const struct sl_splice_pair *p, int i);

/* Bytes queued to send on TCP socket @fd so far (acknowledged plus still in the send queue;
 * read in that order, so the answer never exceeds the truth), up to a constant: compare
 * differences only. -errno on failure. */
int sl_tcp_queued(int fd, uint64_t *bytes);

#endif

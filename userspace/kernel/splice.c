// SPDX-License-Identifier: MIT
/*
 * The kernel splice of passthrough connections. A TLS connection whose server name the proxy
 * has checked needs no more of sluice than to be carried, and carrying it through userspace
 * costs two copies and two wake-ups per read. Here both sockets go into a sockhash whose
 * stream verdict program (bpf/splice.bpf.c) redirects each one's bytes to the other's egress:
 * bulk data never enters sluiced. The proxy keeps both descriptors, is told of hang-ups only,
 * and uses the per-socket byte counts to forward a FIN after the last redirected byte.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <stddef.h>
#include <string.h>
#include <netinet/in.h>
#include <linux/tcp.h> /* tcpi_bytes_acked: glibc's struct tcp_info lacks it */
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <linux/sockios.h>

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <linux/types.h>

#include "sluice.h"
#include "kernel/splice.h"
#include "splice.skel.h"

struct sl_splice {
	struct splice_bpf *skel;
	int socks_fd, ends_fd;
};

struct sl_splice *sl_splice_open(char *err, size_t errlen)
{
	struct sl_splice *s = calloc(1, sizeof(*s));
	int r;

	if (!s) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	s->skel = splice_bpf__open_and_load();
	if (!s->skel) {
		snprintf(err, errlen, "loading the splice program failed: %s", strerror(errno));
		goto fail;
	}
	s->socks_fd = bpf_map__fd(s->skel->maps.sl_splice_socks);
	s->ends_fd = bpf_map__fd(s->skel->maps.sl_splice_ends);
	r = bpf_prog_attach(bpf_program__fd(s->skel->progs.sl_splice_verdict), s->socks_fd,
			    BPF_SK_SKB_STREAM_VERDICT, 0);
	if (r) {
		snprintf(err, errlen, "attaching the splice verdict failed: %s", strerror(-r));
		goto fail;
	}
	return s;
fail:
	sl_splice_close(s);
	return NULL;
}

void sl_splice_close(struct sl_splice *s)
{
	if (!s)
		return;
	splice_bpf__destroy(s->skel);
	free(s);
}

static int cookie_of(int fd, uint64_t *cookie)
{
	socklen_t len = sizeof(*cookie);

	if (getsockopt(fd, SOL_SOCKET, SO_COOKIE, cookie, &len) == -1)
		return -errno;
	return 0;
}

int sl_splice_join(struct sl_splice *s, const int fd[2], struct sl_splice_pair *p)
{
	int err = 0, added = 0;

	memset(p, 0, sizeof(*p));
	if (!s)
		return -EOPNOTSUPP;
	for (int i = 0; i < 2 && !err; i++)
		err = cookie_of(fd[i], &p->cookie[i]);
	if (err)
		goto out;
	/* The ends first: a socket in the sockhash may receive at once, and its verdict looks
	 * its peer up here. */
	for (int i = 0; i < 2; i++) {
		struct sl_splice_end e = { .peer = p->cookie[!i] };

		if (bpf_map_update_elem(s->ends_fd, &p->cookie[i], &e, BPF_NOEXIST)) {
			err = -errno;
			goto out;
		}
	}
	for (; added < 2; added++) {
		uint64_t v = (uint64_t)fd[added];

		if (bpf_map_update_elem(s->socks_fd, &p->cookie[added], &v, BPF_NOEXIST)) {
			err = -errno;
			goto out;
		}
	}
out:
	if (err) {
		for (int i = 0; i < added; i++)
			bpf_map_delete_elem(s->socks_fd, &p->cookie[i]);
		sl_splice_part(s, p);
	}
	return err;
}

void sl_splice_part(struct sl_splice *s, struct sl_splice_pair *p)
{
	if (!s)
		return;
	for (int i = 0; i < 2; i++) {
		if (!p->cookie[i])
			continue;
		bpf_map_delete_elem(s->socks_fd, &p->cookie[i]);
		bpf_map_delete_elem(s->ends_fd, &p->cookie[i]);
		p->cookie[i] = 0;
	}
}

uint64_t sl_splice_moved(struct sl_splice *s, const struct sl_splice_pair *p, int i)
{
	struct sl_splice_end e = { 0 };

	if (s && p->cookie[i])
		bpf_map_lookup_elem(s->ends_fd, &p->cookie[i], &e);
	return e.bytes;
}

int sl_tcp_queued(int fd, uint64_t *bytes)
{
	struct tcp_info ti;
	socklen_t len = sizeof(ti);
	int outq = 0;

	memset(&ti, 0, sizeof(ti));
	/* Acknowledged bytes only grow and unacknowledged ones move into them: reading the
	 * acknowledged count first can only undercount. */
	if (getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &len) == -1 ||
	    ioctl(fd, SIOCOUTQ, &outq) == -1)
		return -errno;
	if (len < offsetof(struct tcp_info, tcpi_bytes_acked) + sizeof(ti.tcpi_bytes_acked))
		return -EOPNOTSUPP;
	*bytes = ti.tcpi_bytes_acked + (uint64_t)outq;
	return 0;
}

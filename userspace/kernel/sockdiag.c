// SPDX-License-Identifier: MIT
/*
 * Open flows of a sandbox, closed from outside when its policy no longer allows them. The
 * kernel's own way from BPF, bpf_sock_destroy(), only runs in a BTF socket iterator, and the
 * kernel here (lockdown=integrity) refuses BTF-attached programs. sock_diag does the same
 * from userspace: a dump of TCP and connected UDP sockets with each one's cgroup id, filtered
 * by the kernel to the sandbox's cgroups, and SOCK_DESTROY (CONFIG_INET_DIAG_DESTROY) for
 * those the caller condemns: the owner's next call fails with ECONNABORTED, a TCP peer gets a
 * RST.
 */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <linux/inet_diag.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <linux/sock_diag.h>

#include "kernel/sockdiag.h"
#include "kernel/sockets.h"

#define TCP_FLOW_STATES                                                           \
	((1u << TCP_ESTABLISHED) | (1u << TCP_SYN_SENT) | (1u << TCP_SYN_RECV) |  \
	 (1u << TCP_FIN_WAIT1) | (1u << TCP_FIN_WAIT2) | (1u << TCP_CLOSE_WAIT) | \
	 (1u << TCP_LAST_ACK) | (1u << TCP_CLOSING))
#define RECV_TIMEOUT_MS 2000

struct victim {
	uint8_t family, proto;
	struct inet_diag_sockid id;
};

struct req {
	struct nlmsghdr nh;
	struct inet_diag_req_v2 r;
};

/*
 * The kernel's filter of a dump (INET_DIAG_REQ_BYTECODE): only the sockets of @cgids, so that
 * a dump of a namespace holding many sockets of others hands over the sandbox's alone. Per id
 * a CGROUP_COND and a JMP: a match goes on to the JMP, which jumps to the end (kept); else on
 * to the next id, and from the last one 4 bytes past the end (dropped). The JMP's own "yes" (4,
 * the next op) is only what the kernel's check follows. At most BC_MAX_IDS ids (the attribute's
 * length is 16 bits); more, and the dump is not filtered (the caller checks each socket's id
 * anyway).
 */
#define BC_BLOCK 16 /* a CGROUP_COND (op and id) and a JMP */
#define BC_MAX_IDS ((UINT16_MAX - sizeof(struct rtattr)) / BC_BLOCK)

static size_t cgroup_filter(uint8_t *bc, const uint64_t *cgids, size_t n)
{
	size_t len = n * BC_BLOCK;

	for (size_t i = 0, off = 0; i < n; i++, off += BC_BLOCK) {
		struct inet_diag_bc_op cond = { INET_DIAG_BC_CGROUP_COND, 12,
						i + 1 < n ? BC_BLOCK : BC_BLOCK + 4 };
		struct inet_diag_bc_op jmp = { INET_DIAG_BC_JMP, 4, (uint16_t)(len - off - 12) };

		memcpy(bc + off, &cond, sizeof(cond));
		memcpy(bc + off + 4, &cgids[i], sizeof(cgids[i]));
		memcpy(bc + off + 12, &jmp, sizeof(jmp));
	}
	return len;
}

/* A request; a dump's with the filter @bc (@bclen bytes, 0: none). */
static int send_req(int fd, uint16_t type, uint16_t flags, uint8_t family, uint8_t proto,
		    uint32_t states, const struct inet_diag_sockid *id, const uint8_t *bc,
		    size_t bclen)
{
	struct sockaddr_nl nl = { .nl_family = AF_NETLINK };
	struct rtattr a = { .rta_len = (unsigned short)RTA_LENGTH(bclen),
			    .rta_type = INET_DIAG_REQ_BYTECODE };
	struct req q = { 0 };
	struct iovec iov[3] = { { &q, sizeof(q) }, { &a, sizeof(a) }, { (void *)bc, bclen } };
	struct msghdr m = { .msg_name = &nl,
			    .msg_namelen = sizeof(nl),
			    .msg_iov = iov,
			    .msg_iovlen = bclen ? 3 : 1 };

	q.nh.nlmsg_len = (uint32_t)(sizeof(q) + (bclen ? RTA_LENGTH(bclen) : 0));
	q.nh.nlmsg_type = type;
	q.nh.nlmsg_flags = NLM_F_REQUEST | flags;
	q.r.sdiag_family = family;
	q.r.sdiag_protocol = proto;
	q.r.idiag_states = states;
	if (id)
		q.r.id = *id;
	if (sendmsg(fd, &m, 0) == -1)
		return -errno;
	return 0;
}

static ssize_t recv_some(int fd, void *buf, size_t len)
{
	struct pollfd p = { .fd = fd, .events = POLLIN };
	ssize_t n;

	for (;;) {
		n = recv(fd, buf, len, 0);
		if (n >= 0)
			return n;
		if (errno == EINTR)
			continue;
		if (errno != EAGAIN)
			return -errno;
		if (poll(&p, 1, RECV_TIMEOUT_MS) <= 0)
			return -ETIMEDOUT;
	}
}

static uint64_t cgroup_of(const struct inet_diag_msg *m, size_t len)
{
	struct rtattr *a = (struct rtattr *)(m + 1);
	int left = (int)(len - NLMSG_ALIGN(sizeof(*m)));

	for (; RTA_OK(a, left); a = RTA_NEXT(a, left)) {
		if (a->rta_type == INET_DIAG_CGROUP_ID && RTA_PAYLOAD(a) >= (int)sizeof(uint64_t)) {
			uint64_t id;

			memcpy(&id, RTA_DATA(a), sizeof(id));
			return id;
		}
	}
	return 0;
}

#define DUMP_BUF 32768

/* Appends to *@v the sockets of one family and protocol that belong to @cgids and that
 * @judge condemns. @buf (DUMP_BUF bytes, NLMSG_ALIGNTO-aligned) receives the dump. */
static int dump(int fd, char *buf, uint8_t family, uint8_t proto, const uint64_t *cgids, size_t ncg,
		const uint8_t *bc, size_t bclen, sl_flow_judge *judge, void *arg, struct victim **v,
		size_t *nv, size_t *cap)
{
	int err;

	err = send_req(fd, SOCK_DIAG_BY_FAMILY, NLM_F_DUMP, family, proto,
		       proto == IPPROTO_TCP ? TCP_FLOW_STATES : 1u << TCP_ESTABLISHED, NULL, bc,
		       bclen);
	if (err)
		return err;
	for (;;) {
		ssize_t n = recv_some(fd, buf, DUMP_BUF);
		struct nlmsghdr *h = (struct nlmsghdr *)buf;

		if (n < 0)
			return (int)n;
		for (; NLMSG_OK(h, (size_t)n); h = NLMSG_NEXT(h, n)) {
			const struct inet_diag_msg *m = NLMSG_DATA(h);
			uint64_t cg;
			int mine = 0;
			uint8_t dst[16] = { 0 };

			if (h->nlmsg_type == NLMSG_DONE)
				return 0;
			if (h->nlmsg_type == NLMSG_ERROR) {
				const struct nlmsgerr *e = NLMSG_DATA(h);

				return e->error ? e->error : -EIO;
			}
			if (h->nlmsg_len < NLMSG_LENGTH(sizeof(*m)))
				continue;
			cg = cgroup_of(m, h->nlmsg_len - NLMSG_LENGTH(0));
			for (size_t i = 0; i < ncg && !mine; i++)
				mine = cgids[i] == cg;
			if (!mine)
				continue;
			memcpy(dst, m->id.idiag_dst, family == AF_INET ? 4 : 16);
			if (!judge(arg, family, proto, dst, ntohs(m->id.idiag_dport)))
				continue;
			if (*nv == *cap) {
				size_t c = *cap ? *cap * 2 : 16;
				struct victim *nvp = realloc(*v, c * sizeof(**v));

				if (!nvp)
					return -ENOMEM;
				*v = nvp;
				*cap = c;
			}
			(*v)[*nv].family = family;
			(*v)[*nv].proto = proto;
			(*v)[*nv].id = m->id;
			(*nv)++;
		}
	}
}

static int destroy(int fd, const struct victim *v)
{
	char buf[1024] __attribute__((aligned(NLMSG_ALIGNTO)));
	struct nlmsghdr *h = (struct nlmsghdr *)buf;
	ssize_t n;
	int err;

	err = send_req(fd, SOCK_DESTROY, NLM_F_ACK, v->family, v->proto, ~0u, &v->id, NULL, 0);
	if (err)
		return err;
	n = recv_some(fd, buf, sizeof(buf));
	if (n < 0)
		return (int)n;
	if (NLMSG_OK(h, (size_t)n) && h->nlmsg_type == NLMSG_ERROR)
		return ((struct nlmsgerr *)NLMSG_DATA(h))->error;
	return 0;
}

int sl_sockdiag_destroy(int netns_fd, const uint64_t *cgids, size_t ncg, sl_flow_judge *judge,
			void *arg, size_t *destroyed)
{
	static const uint8_t families[] = { AF_INET, AF_INET6 };
	static const uint8_t protos[] = { IPPROTO_TCP, IPPROTO_UDP };
	struct victim *v = NULL;
	size_t nv = 0, cap = 0, bclen = 0;
	uint8_t *bc = NULL;
	char *buf;
	int fd, err = 0;

	*destroyed = 0;
	/* The call's own buffer, not a static one: two threads may judge flows at once. */
	buf = malloc(DUMP_BUF); /* malloc aligns to more than NLMSG_ALIGNTO */
	if (!buf)
		return -ENOMEM;
	if (ncg <= BC_MAX_IDS && (bc = malloc(ncg * BC_BLOCK)))
		bclen = cgroup_filter(bc, cgids, ncg);
	fd = sl_socket_in(netns_fd, AF_NETLINK, SOCK_RAW, NETLINK_SOCK_DIAG);
	if (fd < 0) {
		free(bc);
		free(buf);
		return fd;
	}
	/* First the whole list, then the destruction: a dump is not to be interleaved with
	 * other requests on its socket. */
	for (size_t f = 0; f < 2 && !err; f++)
		for (size_t p = 0; p < 2 && !err; p++)
			err = dump(fd, buf, families[f], protos[p], cgids, ncg, bc, bclen, judge,
				   arg, &v, &nv, &cap);
	for (size_t i = 0; i < nv && !err; i++) {
		int e = destroy(fd, &v[i]);

		if (!e)
			(*destroyed)++;
		else if (e != -ENOENT) /* closed meanwhile: fine */
			err = e;
	}
	free(v);
	free(bc);
	free(buf);
	close(fd);
	return err;
}

// SPDX-License-Identifier: MIT
/*
 * The daemon's listeners (DNS, proxy) live on loopback, one port per sandbox, and can be
 * created inside a sandbox's own network namespace: a socket belongs to the namespace it was
 * created in, so the daemon enters the namespace only for socket(), then returns.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sched.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/log.h"
#include "kernel/sockets.h"

int sl_socket_in(int netns_fd, int domain, int type, int protocol)
{
	int self, fd;

	if (netns_fd < 0) {
		fd = socket(domain, type | SOCK_NONBLOCK | SOCK_CLOEXEC, protocol);
		return fd == -1 ? -errno : fd;
	}
	self = open("/proc/self/ns/net", O_RDONLY | O_CLOEXEC);
	if (self == -1)
		return -errno;
	if (setns(netns_fd, CLONE_NEWNET) == -1) {
		fd = -errno;
		close(self);
		return fd;
	}
	fd = socket(domain, type | SOCK_NONBLOCK | SOCK_CLOEXEC, protocol);
	if (fd == -1)
		fd = -errno;
	if (setns(self, CLONE_NEWNET) == -1)
		sl_err("returning to our network namespace failed: %s", strerror(errno));
	close(self);
	return fd;
}

int sl_listen_loopback(int netns_fd, int family, int type, uint16_t port, uint16_t *bound)
{
	struct sockaddr_storage ss = { 0 };
	socklen_t len;
	int fd, one = 1;

	fd = sl_socket_in(netns_fd, family, type, 0);
	if (fd < 0)
		return fd;
	if (family == AF_INET) {
		struct sockaddr_in *sin = (struct sockaddr_in *)&ss;

		sin->sin_family = AF_INET;
		sin->sin_port = htons(port);
		sin->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
		len = sizeof(*sin);
	} else {
		struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&ss;

		sin6->sin6_family = AF_INET6;
		sin6->sin6_port = htons(port);
		sin6->sin6_addr = in6addr_loopback;
		setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
		len = sizeof(*sin6);
	}
	if (type == SOCK_STREAM)
		setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(fd, (struct sockaddr *)&ss, len) == -1 ||
	    (type == SOCK_STREAM && listen(fd, 512) == -1)) {
		int e = errno;

		close(fd);
		return -e;
	}
	if (bound) {
		len = sizeof(ss);
		getsockname(fd, (struct sockaddr *)&ss, &len);
		*bound = ntohs(((struct sockaddr_in *)&ss)->sin_port);
	}
	return fd;
}

// SPDX-License-Identifier: MIT
/*
 * The sandbox CA in a container's own root filesystem: the OCI hook's way to make a stock image
 * (one that knows nothing of sluice) trust its sandbox's CA. A hook cannot change a container's
 * environment or mounts (the runtime has read config.json by then), but at createRuntime the
 * root filesystem is mounted and its files are the container's own (an overlay's upper layer
 * for an image, or `--rootfs DIR:O`), so the CA is added to the system bundles found there,
 * which curl, wget, OpenSSL, Python, Go and git read by default.
 *
 * The root filesystem belongs to whoever made the image, and the hook runs as root on the
 * host: every path is resolved with openat2(RESOLVE_IN_ROOT), so a symbolic link of the image
 * (Alpine's /etc/ssl/cert.pem, RHEL's ca-bundle.crt) resolves inside the root filesystem and
 * never reaches a host file, and only regular files with one link are written.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/openat2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <jansson.h>

#include "core/buf.h"
#include "oci_trust.h"

#define BUNDLE_MAX (16u << 20)
#define CA_BEGIN "# BEGIN sluice sandbox CA\n"
#define CA_END "# END sluice sandbox CA\n"

/* The system bundles of the usual base images, relative to the root filesystem: Debian,
 * Ubuntu and Alpine; Fedora, RHEL and CentOS; Alpine's and LibreSSL's cert.pem; openSUSE. */
static const char *const rootfs_bundles[] = {
	"etc/ssl/certs/ca-certificates.crt",
	"etc/pki/tls/certs/ca-bundle.crt",
	"etc/ssl/cert.pem",
	"etc/ssl/ca-bundle.pem",
};

static int open_in_root(int rootfd, const char *path, int flags)
{
	struct open_how how = {
		.flags = (unsigned long long)flags | O_CLOEXEC | O_NOCTTY,
		.resolve = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV,
	};

	return (int)syscall(SYS_openat2, rootfd, path, &how, sizeof(how));
}

/* The root filesystem of the bundle @bundle (config.json's root.path, relative to the bundle
 * or absolute), opened O_PATH. An fd, or -errno with @err. */
static int open_rootfs(const char *bundle, char *err, size_t errlen)
{
	char cfg[PATH_MAX], root[PATH_MAX];
	json_error_t jerr;
	const char *rp;
	json_t *j;
	int fd;

	snprintf(cfg, sizeof(cfg), "%s/config.json", bundle);
	j = json_load_file(cfg, 0, &jerr);
	if (!j) {
		snprintf(err, errlen, "%s: %s", cfg, jerr.text);
		return -EINVAL;
	}
	rp = json_string_value(json_object_get(json_object_get(j, "root"), "path"));
	if (!rp || !*rp) {
		snprintf(err, errlen, "%s has no root.path", cfg);
		json_decref(j);
		return -EINVAL;
	}
	if (rp[0] == '/')
		snprintf(root, sizeof(root), "%s", rp);
	else
		snprintf(root, sizeof(root), "%s/%s", bundle, rp);
	json_decref(j);
	fd = open(root, O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (fd == -1) {
		fd = -errno;
		snprintf(err, errlen, "root filesystem %s: %s", root, strerror(errno));
	}
	return fd;
}

/* Where in @text (@len bytes) the block an earlier createRuntime of the same container added
 * lies (podman start of a stopped container makes a new sandbox, with a new CA): [*from, *to),
 * or an empty range at the end. */
static void find_block(const char *text, size_t len, size_t *from, size_t *to)
{
	const char *b = text ? memmem(text, len, CA_BEGIN, strlen(CA_BEGIN)) : NULL, *e = NULL;

	if (b)
		e = memmem(b, len - (size_t)(b - text), CA_END, strlen(CA_END));
	*from = *to = len;
	if (e) {
		*from = (size_t)(b - text);
		*to = (size_t)(e - text) + strlen(CA_END);
	}
}

static int write_all(int fd, const char *p, size_t len)
{
	while (len) {
		ssize_t w = write(fd, p, len);

		if (w == -1 && errno == EINTR)
			continue;
		if (w == -1)
			return -errno;
		p += w;
		len -= (size_t)w;
	}
	return 0;
}

/* Adds @ca to the bundle @fd: the old text (less an earlier block), then the CA between the
 * markers. 0 or -errno. */
static int add_to_bundle(int fd, const struct stat *st, const char *ca, size_t ca_len)
{
	struct sl_buf b = { 0 };
	char chunk[65536];
	size_t from, to, len;
	const char *text;
	int e = 0;

	if ((size_t)st->st_size > BUNDLE_MAX)
		return -EFBIG;
	for (;;) {
		ssize_t n = read(fd, chunk, sizeof(chunk));

		if (n == -1 && errno == EINTR)
			continue;
		if (n == -1) {
			e = -errno;
			goto out;
		}
		if (n == 0)
			break;
		if (sl_buf_size(&b) + (size_t)n > BUNDLE_MAX || sl_buf_append(&b, chunk, n)) {
			e = -EFBIG;
			goto out;
		}
	}
	text = sl_buf_head(&b) ? sl_buf_head(&b) : "";
	len = sl_buf_size(&b);
	find_block(text, len, &from, &to);
	if (lseek(fd, 0, SEEK_SET) == -1 || ftruncate(fd, 0) == -1) {
		e = -errno;
		goto out;
	}
	e = write_all(fd, text, from);
	if (!e)
		e = write_all(fd, text + to, len - to);
	/* The text kept ends where it ended, or where the old block began: after a newline. */
	if (!e && len - to && text[len - 1] != '\n')
		e = write_all(fd, "\n", 1);
	else if (!e && len == to && from && text[from - 1] != '\n')
		e = write_all(fd, "\n", 1);
	if (!e)
		e = write_all(fd, CA_BEGIN, strlen(CA_BEGIN));
	if (!e)
		e = write_all(fd, ca, ca_len);
	if (!e && ca_len && ca[ca_len - 1] != '\n')
		e = write_all(fd, "\n", 1);
	if (!e)
		e = write_all(fd, CA_END, strlen(CA_END));
out:
	sl_buf_free(&b);
	return e;
}

int sl_oci_trust_rootfs(const char *bundle, const char *ca, size_t ca_len, FILE *report, char *err,
			size_t errlen)
{
	struct {
		dev_t dev;
		ino_t ino;
	} done[sizeof(rootfs_bundles) / sizeof(rootfs_bundles[0])];
	int rootfd, n_done = 0, e = 0;

	rootfd = open_rootfs(bundle, err, errlen);
	if (rootfd < 0) {
		/* Enforcement does not depend on it: the container starts, and its intercepted
		 * TLS fails verification until it is given the CA another way. */
		fprintf(report, "sluice oci-hook: %s: the sandbox CA is not added\n", err);
		return 0;
	}
	for (size_t i = 0; i < sizeof(rootfs_bundles) / sizeof(rootfs_bundles[0]); i++) {
		const char *path = rootfs_bundles[i];
		struct stat st;
		int fd, seen = 0, r;

		fd = open_in_root(rootfd, path, O_RDWR);
		if (fd == -1) {
			/* Absent is the usual case (each image has one of them); anything else
			 * (a read-only root, a link leading out) is said, and the container
			 * still starts: without the CA its intercepted TLS fails, closed. */
			if (errno != ENOENT && errno != ENOTDIR)
				fprintf(report,
					"sluice oci-hook: /%s: %s: the sandbox CA is not "
					"added there\n",
					path, strerror(errno));
			continue;
		}
		if (fstat(fd, &st) == -1 || !S_ISREG(st.st_mode) || st.st_nlink != 1) {
			fprintf(report,
				"sluice oci-hook: /%s is not a regular file of one link: the "
				"sandbox CA is not added there\n",
				path);
			close(fd);
			continue;
		}
		for (int k = 0; k < n_done; k++)
			seen |= done[k].dev == st.st_dev && done[k].ino == st.st_ino;
		if (seen) { /* a link to a bundle done already (Alpine's cert.pem) */
			close(fd);
			continue;
		}
		r = add_to_bundle(fd, &st, ca, ca_len);
		close(fd);
		if (r) {
			snprintf(err, errlen, "adding the sandbox CA to /%s: %s", path,
				 strerror(-r));
			e = r;
			break;
		}
		done[n_done].dev = st.st_dev;
		done[n_done].ino = st.st_ino;
		n_done++;
	}
	close(rootfd);
	if (!e && !n_done)
		fprintf(report, "sluice oci-hook: no system CA bundle in the root filesystem: give "
				"the container its sandbox's CA (sluice ca NAME) another way\n");
	return e;
}

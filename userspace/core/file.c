// SPDX-License-Identifier: MIT
/*
 * Writing a file whole and durably (file.h): temporary file, fsync, rename or link, fsync of
 * the directory. One copy of the sequence for every secret sluiced keeps on disk.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/file.h"

int sl_file_write(const char *dir, const char *name, const void *data, size_t len, mode_t mode,
		  enum sl_file_put put)
{
	char path[PATH_MAX], tmp[PATH_MAX];
	const char *p = data;
	int fd = -1, dfd = -1, err = 0;

	if ((size_t)snprintf(path, sizeof(path), "%s/%s", dir, name) >= sizeof(path) ||
	    (size_t)snprintf(tmp, sizeof(tmp), "%s/.%s.tmp", dir, name) >= sizeof(tmp))
		return -ENAMETOOLONG;
	/* A leftover of a crash; O_EXCL then guarantees the file below is ours and new. */
	if (unlink(tmp) == -1 && errno != ENOENT)
		return -errno;
	fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, mode);
	if (fd == -1)
		return -errno;
	if (fchmod(fd, mode) == -1) /* the umask may have narrowed it; never widens */
		goto fail;
	while (len) {
		ssize_t n = write(fd, p, len);

		if (n == -1 && errno == EINTR)
			continue;
		if (n == -1)
			goto fail;
		p += n;
		len -= n;
	}
	if (fsync(fd) == -1)
		goto fail;
	if (close(fd) == -1) {
		fd = -1;
		goto fail;
	}
	fd = -1;
	if (put == SL_FILE_NEW) {
		/* link() never replaces: a file another process put there first wins. */
		if (link(tmp, path) == -1)
			goto fail;
		unlink(tmp);
	} else if (rename(tmp, path) == -1) {
		goto fail;
	}
	if (put == SL_FILE_UPDATE)
		return 0;
	dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dfd == -1 || (fsync(dfd) == -1 && errno != EINVAL))
		err = -errno;
	if (dfd != -1)
		close(dfd);
	return err;
fail:
	err = -errno;
	if (fd != -1)
		close(fd);
	unlink(tmp);
	return err;
}

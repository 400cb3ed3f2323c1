// SPDX-License-Identifier: MIT
/*
 * Logging for sluiced. Lines are written whole with one write() so that concurrent writers
 * (a worker thread, libbpf's print callback) never interleave inside a line. Callers never
 * pass secrets here: headers, credentials and env values stay out of the log by construction.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "core/log.h"

static int log_fd = STDERR_FILENO;
static int log_level = SL_LOG_INFO;

int sl_log_open(const char *path)
{
	int fd;

	if (!path || !strcmp(path, "-")) {
		log_fd = STDERR_FILENO;
		return 0;
	}
	fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
	if (fd == -1)
		return -errno;
	if (log_fd > STDERR_FILENO)
		close(log_fd);
	log_fd = fd;
	return 0;
}

void sl_log_set_level(int level)
{
	log_level = level;
}

void sl_log(int level, const char *fmt, ...)
{
	static const char *const names[] = { "error", "warn", "info", "debug" };
	char line[2048];
	struct timespec ts;
	struct tm tm;
	va_list ap;
	int n, m;

	if (level > log_level)
		return;
	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	n = snprintf(line, sizeof(line),
		     "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ %s: ", tm.tm_year + 1900, tm.tm_mon + 1,
		     tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, ts.tv_nsec / 1000000,
		     names[level < 0 ? 0 :
			   level > 3 ? 3 :
				       level]);
	va_start(ap, fmt);
	m = vsnprintf(line + n, sizeof(line) - n - 1, fmt, ap);
	va_end(ap);
	if (m < 0)
		m = 0;
	n += m;
	if (n > (int)sizeof(line) - 2)
		n = sizeof(line) - 2;
	/* Keep one message on one line whatever it contains. */
	for (int i = 0; i < n; i++)
		if (line[i] == '\n' || line[i] == '\r')
			line[i] = ' ';
	line[n++] = '\n';
	if (write(log_fd, line, n) == -1)
		(void)0; /* nowhere left to report it */
}

void sl_errf(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;

	if (!err || !errlen)
		return;
	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
}

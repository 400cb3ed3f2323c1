/* SPDX-License-Identifier: MIT */
/*
 * Daemon logging: one line per message, timestamped, to a file or stderr.
 *
 * Threading: sl_log() and sl_errf() from any thread; sl_log() writes each line with one
 * write() (lines do not interleave) and blocks as long as that write does. sl_log_open() and
 * sl_log_set_level() at startup only, before a second thread exists.
 */
#ifndef SL_LOG_H
#define SL_LOG_H

#include <stddef.h>

enum { SL_LOG_ERR, SL_LOG_WARN, SL_LOG_INFO, SL_LOG_DEBUG };

/* Opens @path for appending ("-" or NULL: stderr). Returns 0 or -errno. */
int sl_log_open(const char *path);
void sl_log_set_level(int level);
void sl_log(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Formats a one-line reason into @err (@errlen bytes), for functions that report why they
 * failed to a caller that decides where the message goes (an API answer, the log). */
void sl_errf(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

#define sl_err(...) sl_log(SL_LOG_ERR, __VA_ARGS__)
#define sl_warn(...) sl_log(SL_LOG_WARN, __VA_ARGS__)
#define sl_info(...) sl_log(SL_LOG_INFO, __VA_ARGS__)
#define sl_debug(...) sl_log(SL_LOG_DEBUG, __VA_ARGS__)

#endif

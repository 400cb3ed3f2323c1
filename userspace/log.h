/* SPDX-License-Identifier: MIT */
/* Daemon logging: one line per message, timestamped, to a file or stderr. */
#ifndef SL_LOG_H
#define SL_LOG_H

enum { SL_LOG_ERR, SL_LOG_WARN, SL_LOG_INFO, SL_LOG_DEBUG };

/* Opens @path for appending ("-" or NULL: stderr). Returns 0 or -errno. */
int sl_log_open(const char *path);
void sl_log_set_level(int level);
void sl_log(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define sl_err(...) sl_log(SL_LOG_ERR, __VA_ARGS__)
#define sl_warn(...) sl_log(SL_LOG_WARN, __VA_ARGS__)
#define sl_info(...) sl_log(SL_LOG_INFO, __VA_ARGS__)
#define sl_debug(...) sl_log(SL_LOG_DEBUG, __VA_ARGS__)

#endif

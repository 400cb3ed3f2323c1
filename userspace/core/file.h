/* SPDX-License-Identifier: MIT */
/*
 * Files written whole and durably: the CA's key and certificate (tls/ca.c) and the KV key
 * (store/kv.c) are written through a temporary file, so that a crash never leaves a partly
 * written one in place.
 *
 * Threading: any thread; blocks on the disk (write, fsync of the file and of its directory).
 */
#ifndef SL_FILE_H
#define SL_FILE_H

#include <stddef.h>
#include <sys/types.h>

/* How sl_file_write() puts the new file in place. */
enum sl_file_put {
	SL_FILE_REPLACE, /* rename() over any file of that name */
	SL_FILE_NEW, /* link(): never replaces; -EEXIST if the name exists (someone else's wins) */
	SL_FILE_UPDATE, /* rename() over the file there, without the directory's fsync: a crash
			 * of the machine leaves the old file or the new one, each whole */
};

/* Writes @len bytes of @data to @dir/@name: into @dir/.@name.tmp, created with O_EXCL and
 * @mode (fchmod()ed to @mode, so never wider at any moment, whatever the umask), fsynced,
 * put in place as @put says, and @dir fsynced for the new name (not for SL_FILE_UPDATE). A
 * crash leaves at worst the temporary file, which the next call removes. Returns 0 or -errno
 * (-ENAMETOOLONG, -EEXIST for SL_FILE_NEW, or what a call failed with); on an error the
 * temporary file is gone. */
int sl_file_write(const char *dir, const char *name, const void *data, size_t len, mode_t mode,
		  enum sl_file_put put);

#endif

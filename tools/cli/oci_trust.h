/* SPDX-License-Identifier: MIT */
/* The sandbox CA added to a container's own root filesystem by the OCI hook
 * (tools/cli/oci_trust.c).
 * Threading: the CLI's one thread; it blocks on file I/O only. */
#ifndef SL_OCI_TRUST_H
#define SL_OCI_TRUST_H

#include <stddef.h>
#include <stdio.h>

/*
 * Adds the PEM @ca (@ca_len bytes) to every system CA bundle of the root filesystem of the OCI
 * bundle directory @bundle (config.json's root.path), replacing the block an earlier call put
 * there. Paths resolve inside the root filesystem only. A bundle that cannot be opened for
 * writing, or a root filesystem that cannot be found, is skipped with a line on @report. 0, or
 * -errno with the reason in @err: a bundle could not be rewritten.
 */
int sl_oci_trust_rootfs(const char *bundle, const char *ca, size_t ca_len, FILE *report, char *err,
			size_t errlen);

#endif

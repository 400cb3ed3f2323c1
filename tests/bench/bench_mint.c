// SPDX-License-Identifier: MIT
/*
 * Leaf minting cost. A TLS connection to a name the sandbox has not used recently waits for
 * one mint before its handshake can go on; every other connection takes the leaf from the
 * cache. This measures both, and what sl_ca_use_leaf() costs a connection (binding the SSL
 * to its sandbox and name: the leaf itself goes in only when the handshake sends a
 * certificate, never for a resumed session), against a baseline
 * measured in the same run: one ECDSA P-256 signature over a certificate-sized message, the
 * floor under any mint. Output: one "name value" line per figure, times in microseconds.
 *
 * usage: bench_mint [COLD_NAMES]   (default 2000)
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/evp.h>
#include <openssl/ssl.h>

#include "tls/ca.h"

#define WARMUP 64
#define TARGET_COLD_US 60.0

static double now_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e6 + ts.tv_nsec / 1e3;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return (x > y) - (x < y);
}

struct summary {
	double mean, p50, p99;
};

static struct summary summarize(const char *what, double *v, size_t n)
{
	struct summary s = { 0 };

	for (size_t i = 0; i < n; i++)
		s.mean += v[i];
	s.mean /= n;
	qsort(v, n, sizeof(*v), cmp_double);
	s.p50 = v[n / 2];
	s.p99 = v[n * 99 / 100];
	printf("%s_us_mean %.2f\n%s_us_p50 %.2f\n%s_us_p99 %.2f\n", what, s.mean, what, s.p50, what,
	       s.p99);
	return s;
}

static void name_of(char *buf, size_t len, size_t i)
{
	snprintf(buf, len, "h%zu.bench.example.com", i);
}

static int mint(struct sl_ca *ca, const char *name, double *us)
{
	EVP_PKEY *key;
	X509 *cert;
	double t0 = now_us();
	int err = sl_ca_leaf(ca, name, &cert, &key);

	*us = now_us() - t0;
	if (err) {
		fprintf(stderr, "bench_mint: leaf for %s: %s\n", name, strerror(-err));
		return err;
	}
	X509_free(cert);
	EVP_PKEY_free(key);
	return 0;
}

/* The baseline: EVP_DigestSign with a new context each time, as any X509 signing does. */
static int baseline_sign(EVP_PKEY *key, double *v, size_t n)
{
	unsigned char msg[400], sig[80];

	memset(msg, 0x5a, sizeof(msg));
	for (size_t i = 0; i < n; i++) {
		EVP_MD_CTX *md = EVP_MD_CTX_new();
		size_t siglen = sizeof(sig);
		double t0 = now_us();
		int ok = md &&
			 EVP_DigestSignInit_ex(md, NULL, "SHA256", NULL, NULL, key, NULL) == 1 &&
			 EVP_DigestSign(md, sig, &siglen, msg, sizeof(msg)) == 1;

		v[i] = now_us() - t0;
		EVP_MD_CTX_free(md);
		if (!ok)
			return -EIO;
	}
	return 0;
}

int main(int argc, char **argv)
{
	size_t n = argc > 1 ? strtoul(argv[1], NULL, 10) : 2000;
	struct summary cold, base;
	struct sl_ca_stats st;
	SSL_CTX *sctx = NULL;
	struct sl_ca *ca;
	EVP_PKEY *key;
	double *v;
	char name[64];
	int rc = 1;

	if (n < 100) {
		fprintf(stderr, "usage: bench_mint [COLD_NAMES >= 100]\n");
		return 2;
	}
	v = calloc(n, sizeof(*v));
	ca = sl_ca_new("bench");
	key = EVP_EC_gen("P-256");
	sctx = SSL_CTX_new(TLS_server_method());
	if (!v || !ca || !key || !sctx || sl_ca_set_cache_capacity(ca, n + WARMUP) ||
	    baseline_sign(key, v, n))
		goto cleanup;
	printf("cold_names %zu\n", n);
	base = summarize("baseline_sign", v, n);

	/* first uses of the library's lazily initialised paths are not minting */
	for (size_t i = 0; i < WARMUP; i++) {
		snprintf(name, sizeof(name), "warmup%zu.bench.example.com", i);
		if (mint(ca, name, &v[0]))
			goto cleanup;
	}
	for (size_t i = 0; i < n; i++) {
		name_of(name, sizeof(name), i);
		if (mint(ca, name, &v[i]))
			goto cleanup;
	}
	cold = summarize("mint_cold", v, n);

	/* a stride through the names, so that the order differs from the insertion order */
	for (size_t i = 0, j = 0; i < n; i++, j = (j + 7919) % n) {
		name_of(name, sizeof(name), j);
		if (mint(ca, name, &v[i]))
			goto cleanup;
	}
	summarize("mint_cached", v, n);

	for (size_t i = 0; i < n; i++) {
		SSL *ssl = SSL_new(sctx);
		double t0;
		int err;

		if (!ssl)
			goto cleanup;
		name_of(name, sizeof(name), i);
		t0 = now_us();
		err = sl_ca_use_leaf(ca, ssl, name);
		v[i] = now_us() - t0;
		SSL_free(ssl);
		if (err)
			goto cleanup;
	}
	summarize("use_leaf_cached", v, n);

	sl_ca_get_stats(ca, &st);
	printf("cache_hits %llu\ncache_misses %llu\n", (unsigned long long)st.hits,
	       (unsigned long long)st.misses);
	printf("mint_cold_vs_sign_ratio_p50 %.2f\n", cold.p50 / base.p50);
	printf("mint_cold_target_us %.0f\n", TARGET_COLD_US);
	printf("mint_cold_p50_within_target %d\n", cold.p50 <= TARGET_COLD_US);
	rc = 0;
cleanup:
	if (rc)
		fprintf(stderr, "bench_mint: failed\n");
	SSL_CTX_free(sctx);
	EVP_PKEY_free(key);
	sl_ca_free(ca);
	free(v);
	return rc;
}

// SPDX-License-Identifier: MIT
/*
 * The sandbox CA, checked the way a client checks it: leaves are verified with
 * X509_verify_cert() and host name checks against the CA certificate, and served in real TLS
 * handshakes over a socketpair with the SNI callback the proxy uses. Also the cache (hits,
 * LRU eviction, renewal near expiry), the key file's permissions and names a hostile client
 * may send, and session resumption with the sandbox's ticket keys (per sandbox, per name,
 * across a rotation) through the proxy's own server context.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "tls/ca.h"
#include "tls/tls.h"

/* X509_verify_cert() of @leaf under @ca_cert alone, as a TLS client of @host (or @ip) would.
 * Returns the verification error (X509_V_OK on success). */
static int verify(X509 *ca_cert, X509 *leaf, const char *host, const char *ip)
{
	X509_STORE *store = X509_STORE_new();
	X509_STORE_CTX *ctx = X509_STORE_CTX_new();
	X509_VERIFY_PARAM *vp;
	int ok, verr;

	assert_non_null(store);
	assert_non_null(ctx);
	assert_int_equal(X509_STORE_add_cert(store, ca_cert), 1);
	assert_int_equal(X509_STORE_CTX_init(ctx, store, leaf, NULL), 1);
	vp = X509_STORE_CTX_get0_param(ctx);
	assert_int_equal(X509_VERIFY_PARAM_set_purpose(vp, X509_PURPOSE_SSL_SERVER), 1);
	if (host)
		assert_int_equal(X509_VERIFY_PARAM_set1_host(vp, host, 0), 1);
	if (ip)
		assert_int_equal(X509_VERIFY_PARAM_set1_ip_asc(vp, ip), 1);
	ok = X509_verify_cert(ctx);
	verr = X509_STORE_CTX_get_error(ctx);
	X509_STORE_CTX_free(ctx);
	X509_STORE_free(store);
	ERR_clear_error();
	assert_int_equal(ok == 1, verr == X509_V_OK);
	return verr;
}

static time_t asn1_to_time(const ASN1_TIME *t)
{
	struct tm tm;

	assert_int_equal(ASN1_TIME_to_tm(t, &tm), 1);
	return timegm(&tm);
}

static void name_text(X509_NAME *name, int nid, char *buf, int len)
{
	buf[0] = 0;
	X509_NAME_get_text_by_NID(name, nid, buf, len);
}

static int ext_critical(X509 *x, int nid)
{
	int i = X509_get_ext_by_NID(x, nid, -1);

	assert_true(i >= 0);
	return X509_EXTENSION_get_critical(X509_get_ext(x, i));
}

static struct sl_ca *new_ca(const char *name)
{
	struct sl_ca *ca = sl_ca_new(name);

	assert_non_null(ca);
	return ca;
}

static X509 *leaf(struct sl_ca *ca, const char *name)
{
	EVP_PKEY *key = NULL;
	X509 *cert = NULL;

	assert_int_equal(sl_ca_leaf(ca, name, &cert, &key), 0);
	assert_non_null(cert);
	assert_non_null(key);
	EVP_PKEY_free(key);
	return cert;
}

static void test_ca_certificate(void **state)
{
	struct sl_ca *ca = new_ca("alpha"), *other = new_ca("beta");
	X509 *c = sl_ca_cert(ca);
	EVP_PKEY *pub = X509_get0_pubkey(c);
	BIGNUM *serial = ASN1_INTEGER_to_BN(X509_get0_serialNumber(c), NULL);
	time_t now = time(NULL);
	char group[64], buf[256];
	size_t len;

	(void)state;
	assert_non_null(pub);
	assert_true(EVP_PKEY_is_a(pub, "EC"));
	assert_int_equal(EVP_PKEY_get_group_name(pub, group, sizeof(group), &len), 1);
	assert_string_equal(group, "prime256v1");

	assert_int_equal(X509_check_ca(c), 1);
	assert_true(X509_get_extension_flags(c) & EXFLAG_CA);
	assert_int_equal(ext_critical(c, NID_basic_constraints), 1);
	assert_int_equal(X509_get_pathlen(c), 0);
	assert_int_equal(X509_get_key_usage(c), KU_KEY_CERT_SIGN | KU_CRL_SIGN);
	assert_int_equal(ext_critical(c, NID_key_usage), 1);
	assert_non_null(X509_get0_subject_key_id(c));
	assert_int_equal(X509_self_signed(c, 1), 1);

	name_text(X509_get_subject_name(c), NID_commonName, buf, sizeof(buf));
	assert_string_equal(buf, "sluice sandbox alpha CA");
	name_text(X509_get_subject_name(c), NID_organizationalUnitName, buf, sizeof(buf));
	assert_string_equal(buf, "alpha");
	assert_int_equal(BN_num_bits(serial), 127); /* 16 random octets, first in 0x40..0x7f */
	assert_true(asn1_to_time(X509_get0_notBefore(c)) <= now - 3500);
	assert_true(asn1_to_time(X509_get0_notAfter(c)) >= now + 3650L * 86400);

	/* another sandbox: another key, another serial */
	assert_int_not_equal(EVP_PKEY_eq(pub, X509_get0_pubkey(sl_ca_cert(other))), 1);
	assert_int_not_equal(ASN1_INTEGER_cmp(X509_get0_serialNumber(c),
					      X509_get0_serialNumber(sl_ca_cert(other))),
			     0);
	BN_free(serial);
	sl_ca_free(ca);
	sl_ca_free(other);
}

static void test_ca_sandbox_names(void **state)
{
	char name[66], buf[256];
	struct sl_ca *ca;

	(void)state;
	memset(name, 'n', 64);
	name[64] = 0;
	ca = new_ca(name); /* too long for "sluice sandbox NAME CA" in a common name */
	name_text(X509_get_subject_name(sl_ca_cert(ca)), NID_commonName, buf, sizeof(buf));
	assert_string_equal(buf, "sluice sandbox CA");
	name_text(X509_get_subject_name(sl_ca_cert(ca)), NID_organizationalUnitName, buf,
		  sizeof(buf));
	assert_string_equal(buf, name);
	sl_ca_free(ca);

	name[64] = 'n';
	name[65] = 0;
	errno = 0;
	assert_null(sl_ca_new(name));
	assert_int_equal(errno, EINVAL);
	assert_null(sl_ca_new(""));
	assert_int_equal(errno, EINVAL);
	assert_null(sl_ca_new("a\nb"));
	assert_int_equal(errno, EINVAL);
}

static void test_leaf_verifies(void **state)
{
	struct sl_ca *ca = new_ca("alpha");
	X509 *c = sl_ca_cert(ca), *x = NULL;
	EVP_PKEY *key = NULL;
	GENERAL_NAMES *san;
	GENERAL_NAME *gen;
	unsigned char *a = NULL, *b = NULL;
	time_t now = time(NULL);
	char buf[256];
	int na, nb;

	(void)state;
	assert_int_equal(sl_ca_leaf(ca, "api.example.com", &x, &key), 0);
	assert_int_equal(verify(c, x, "api.example.com", NULL), X509_V_OK);
	assert_int_equal(verify(c, x, "other.example.com", NULL), X509_V_ERR_HOSTNAME_MISMATCH);
	assert_int_equal(verify(c, x, "example.com", NULL), X509_V_ERR_HOSTNAME_MISMATCH);
	assert_int_equal(X509_check_issued(c, x), X509_V_OK);
	assert_int_equal(X509_verify(x, X509_get0_pubkey(c)), 1);

	assert_int_equal(X509_check_ca(x), 0);
	assert_int_equal(ext_critical(x, NID_basic_constraints), 1);
	assert_int_equal(X509_get_key_usage(x), KU_DIGITAL_SIGNATURE);
	assert_int_equal(ext_critical(x, NID_key_usage), 1);
	assert_int_equal(X509_get_extended_key_usage(x), XKU_SSL_SERVER);
	assert_int_equal(ASN1_OCTET_STRING_cmp(X509_get0_authority_key_id(x),
					       X509_get0_subject_key_id(c)),
			 0);
	assert_int_equal(X509_NAME_cmp(X509_get_issuer_name(x), X509_get_subject_name(c)), 0);
	name_text(X509_get_subject_name(x), NID_commonName, buf, sizeof(buf));
	assert_string_equal(buf, "api.example.com");

	san = X509_get_ext_d2i(x, NID_subject_alt_name, NULL, NULL);
	assert_non_null(san);
	assert_int_equal(sk_GENERAL_NAME_num(san), 1);
	gen = sk_GENERAL_NAME_value(san, 0);
	assert_int_equal(gen->type, GEN_DNS);
	assert_int_equal(ASN1_STRING_length(gen->d.dNSName), strlen("api.example.com"));
	assert_memory_equal(ASN1_STRING_get0_data(gen->d.dNSName), "api.example.com", 15);
	GENERAL_NAMES_free(san);

	assert_true(llabs(asn1_to_time(X509_get0_notBefore(x)) - (now - 3600)) <= 5);
	assert_true(llabs(asn1_to_time(X509_get0_notAfter(x)) - (now + 7 * 86400)) <= 5);

	/* the key handed out is the leaf's, and the leaf carries exactly its public key */
	assert_int_equal(X509_check_private_key(x, key), 1);
	na = i2d_PUBKEY(X509_get0_pubkey(x), &a);
	nb = i2d_PUBKEY(key, &b);
	assert_true(na > 0);
	assert_int_equal(na, nb);
	assert_memory_equal(a, b, na);
	OPENSSL_free(a);
	OPENSSL_free(b);
	assert_true(EVP_PKEY_is_a(key, "EC"));

	X509_free(x);
	EVP_PKEY_free(key);
	sl_ca_free(ca);
}

static void test_leaf_other_sandbox_refused(void **state)
{
	struct sl_ca *a = new_ca("alpha"), *b = new_ca("beta"), *a2 = new_ca("alpha");
	X509 *x = leaf(a, "api.example.com");

	(void)state;
	assert_int_equal(verify(sl_ca_cert(a), x, "api.example.com", NULL), X509_V_OK);
	assert_int_equal(verify(sl_ca_cert(b), x, "api.example.com", NULL),
			 X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY);
	/* same sandbox name, same subject: still another CA */
	assert_int_equal(verify(sl_ca_cert(a2), x, "api.example.com", NULL),
			 X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY);
	X509_free(x);
	sl_ca_free(a);
	sl_ca_free(b);
	sl_ca_free(a2);
}

static void test_leaf_keys(void **state)
{
	struct sl_ca *a = new_ca("alpha"), *b = new_ca("beta");
	EVP_PKEY *ka1, *ka2, *kb;
	X509 *xa1, *xa2, *xb;

	(void)state;
	assert_int_equal(sl_ca_leaf(a, "one.example.com", &xa1, &ka1), 0);
	assert_int_equal(sl_ca_leaf(a, "two.example.com", &xa2, &ka2), 0);
	assert_int_equal(sl_ca_leaf(b, "one.example.com", &xb, &kb), 0);
	assert_ptr_equal(ka1, ka2);
	assert_int_equal(EVP_PKEY_eq(X509_get0_pubkey(xa1), X509_get0_pubkey(xa2)), 1);
	assert_int_not_equal(EVP_PKEY_eq(X509_get0_pubkey(xa1), X509_get0_pubkey(xb)), 1);
	assert_int_not_equal(EVP_PKEY_eq(ka1, kb), 1);
	assert_int_not_equal(EVP_PKEY_eq(ka1, X509_get0_pubkey(sl_ca_cert(a))), 1);
	assert_int_not_equal(
		ASN1_INTEGER_cmp(X509_get0_serialNumber(xa1), X509_get0_serialNumber(xa2)), 0);
	X509_free(xa1);
	X509_free(xa2);
	X509_free(xb);
	EVP_PKEY_free(ka1);
	EVP_PKEY_free(ka2);
	EVP_PKEY_free(kb);
	ERR_clear_error();
	sl_ca_free(a);
	sl_ca_free(b);
}

static void test_cache_hit(void **state)
{
	struct sl_ca *ca = new_ca("alpha");
	struct sl_ca_stats st;
	X509 *x1 = leaf(ca, "a.example.com"), *x2 = leaf(ca, "a.example.com");
	X509 *x3 = leaf(ca, "A.Example.COM");

	(void)state;
	assert_ptr_equal(x1, x2);
	assert_ptr_equal(x1, x3);
	sl_ca_get_stats(ca, &st);
	assert_int_equal(st.hits, 2);
	assert_int_equal(st.misses, 1);
	assert_int_equal(st.entries, 1);
	assert_int_equal(st.evictions, 0);
	assert_int_equal(st.capacity, SL_CA_CACHE_DEFAULT);
	X509_free(x1);
	X509_free(x2);
	X509_free(x3);
	sl_ca_free(ca);
}

/* The buckets start few and grow with the leaves (a CA of a sandbox that intercepts nothing
 * holds 16): every leaf is still found after the table grew under it, and after a lower
 * capacity rehashed the survivors. */
static X509 *nth_leaf(struct sl_ca *ca, int i)
{
	char name[64];

	snprintf(name, sizeof(name), "n%d.example.com", i);
	return leaf(ca, name);
}

/* Leaves @from.. @to-1 are the cached ones of @first. */
static void cached(struct sl_ca *ca, X509 **first, int from, int to)
{
	for (int i = from; i < to; i++) {
		X509 *again = nth_leaf(ca, i);

		assert_ptr_equal(again, first[i]);
		X509_free(again);
	}
}

static void test_cache_grows(void **state)
{
	enum { N = 300 };
	struct sl_ca *ca = new_ca("grow");
	struct sl_ca_stats st;
	X509 *first[N];

	(void)state;
	for (int i = 0; i < N; i++)
		first[i] = nth_leaf(ca, i);
	cached(ca, first, 0, N);
	sl_ca_get_stats(ca, &st);
	assert_int_equal(st.hits, N);
	assert_int_equal(st.misses, N);
	assert_int_equal(st.entries, N);
	assert_int_equal(sl_ca_set_cache_capacity(ca, 40), 0);
	cached(ca, first, N - 40, N); /* the 40 most recent stay */
	sl_ca_get_stats(ca, &st);
	assert_int_equal(st.hits, N + 40);
	assert_int_equal(st.entries, 40);
	for (int i = 0; i < N; i++)
		X509_free(first[i]);
	sl_ca_free(ca);
}

static void test_cache_lru(void **state)
{
	struct sl_ca *ca = new_ca("alpha");
	X509 *a, *b, *c, *d, *x;
	struct sl_ca_stats st;

	(void)state;
	assert_int_equal(sl_ca_set_cache_capacity(ca, 0), -EINVAL);
	assert_int_equal(sl_ca_set_cache_capacity(ca, 3), 0);
	a = leaf(ca, "a.test");
	b = leaf(ca, "b.test");
	c = leaf(ca, "c.test");
	x = leaf(ca, "a.test"); /* a is now the most recently used, b the least */
	assert_ptr_equal(x, a);
	X509_free(x);
	d = leaf(ca, "d.test");
	sl_ca_get_stats(ca, &st);
	assert_int_equal(st.evictions, 1);
	assert_int_equal(st.entries, 3);

	x = leaf(ca, "a.test");
	assert_ptr_equal(x, a);
	X509_free(x);
	x = leaf(ca, "c.test");
	assert_ptr_equal(x, c);
	X509_free(x);
	x = leaf(ca, "d.test");
	assert_ptr_equal(x, d);
	X509_free(x);
	sl_ca_get_stats(ca, &st);
	assert_int_equal(st.hits, 4);
	assert_int_equal(st.misses, 4);

	x = leaf(ca, "b.test"); /* evicted: minted anew */
	assert_ptr_not_equal(x, b);
	assert_int_not_equal(ASN1_INTEGER_cmp(X509_get0_serialNumber(x), X509_get0_serialNumber(b)),
			     0);
	/* the reference handed out before the eviction is still good */
	assert_int_equal(X509_check_host(b, "b.test", 0, 0, NULL), 1);
	sl_ca_get_stats(ca, &st);
	assert_int_equal(st.misses, 5);
	assert_int_equal(st.evictions, 2); /* a: least recent after c, d were used */

	assert_int_equal(sl_ca_set_cache_capacity(ca, 1), 0);
	sl_ca_get_stats(ca, &st);
	assert_int_equal(st.entries, 1);
	assert_int_equal(st.evictions, 4);
	assert_int_equal(st.capacity, 1);
	X509_free(d);
	d = leaf(ca, "b.test"); /* the most recent one stayed */
	assert_ptr_equal(d, x);
	X509_free(a);
	X509_free(b);
	X509_free(c);
	X509_free(d);
	X509_free(x);
	sl_ca_free(ca);
}

static time_t fake_now;

static time_t fake_clock(void)
{
	return fake_now;
}

static void test_cache_renewal(void **state)
{
	struct sl_ca *ca = new_ca("alpha");
	time_t start = time(NULL);
	struct sl_ca_stats st;
	X509 *x1, *x2, *x3, *x4;

	(void)state;
	sl_ca_set_clock(ca, fake_clock);
	fake_now = start;
	x1 = leaf(ca, "a.test");
	fake_now = start + SL_CA_LEAF_LIFETIME_S - SL_CA_LEAF_RENEW_S; /* a day left: still good */
	x2 = leaf(ca, "a.test");
	assert_ptr_equal(x1, x2);
	fake_now++;
	x3 = leaf(ca, "a.test");
	assert_ptr_not_equal(x3, x1);
	assert_int_equal(asn1_to_time(X509_get0_notBefore(x3)), fake_now - 3600);
	assert_int_equal(asn1_to_time(X509_get0_notAfter(x3)), fake_now + SL_CA_LEAF_LIFETIME_S);
	fake_now -= 2 * 3600; /* the clock went back before the leaf's notBefore */
	x4 = leaf(ca, "a.test");
	assert_ptr_not_equal(x4, x3);
	sl_ca_get_stats(ca, &st);
	assert_int_equal(st.hits, 1);
	assert_int_equal(st.misses, 3);
	assert_int_equal(st.renewals, 2);
	assert_int_equal(st.entries, 1);
	assert_int_equal(st.evictions, 0);
	X509_free(x1);
	X509_free(x2);
	X509_free(x3);
	X509_free(x4);
	sl_ca_free(ca);
}

static void test_leaf_ip_literals(void **state)
{
	struct sl_ca *ca = new_ca("alpha");
	X509 *v4 = leaf(ca, "127.0.0.1"), *v6 = leaf(ca, "::1"), *v6b = leaf(ca, "0:0::1");
	GENERAL_NAMES *san = X509_get_ext_d2i(v4, NID_subject_alt_name, NULL, NULL);
	GENERAL_NAME *gen;

	(void)state;
	assert_non_null(san);
	gen = sk_GENERAL_NAME_value(san, 0);
	assert_int_equal(gen->type, GEN_IPADD);
	assert_int_equal(ASN1_STRING_length(gen->d.iPAddress), 4);
	assert_memory_equal(ASN1_STRING_get0_data(gen->d.iPAddress), "\x7f\0\0\x01", 4);
	GENERAL_NAMES_free(san);
	assert_int_equal(verify(sl_ca_cert(ca), v4, NULL, "127.0.0.1"), X509_V_OK);
	assert_int_equal(verify(sl_ca_cert(ca), v4, NULL, "127.0.0.2"),
			 X509_V_ERR_IP_ADDRESS_MISMATCH);
	assert_int_equal(verify(sl_ca_cert(ca), v6, NULL, "::1"), X509_V_OK);
	assert_ptr_equal(v6, v6b); /* one canonical form per address */
	X509_free(v4);
	X509_free(v6);
	X509_free(v6b);
	sl_ca_free(ca);
}

static void test_leaf_long_name(void **state)
{
	struct sl_ca *ca = new_ca("alpha");
	char name[300];
	X509 *x;

	(void)state;
	/* 63 + 1 + 63 + 1 + 63 + 1 + 61 = 253: longer than a common name may be */
	memset(name, 'a', sizeof(name));
	name[63] = name[127] = name[191] = '.';
	name[253] = 0;
	x = leaf(ca, name);
	assert_int_equal(X509_NAME_entry_count(X509_get_subject_name(x)), 0);
	assert_int_equal(ext_critical(x, NID_subject_alt_name), 1);
	assert_int_equal(verify(sl_ca_cert(ca), x, name, NULL), X509_V_OK);
	X509_free(x);

	name[253] = 'a'; /* 254 */
	name[254] = 0;
	assert_false(sl_ca_name_ok(name));
	memset(name, 'a', 64); /* a 64-octet label */
	strcpy(name + 64, ".example");
	assert_false(sl_ca_name_ok(name));
	memset(name, 'a', 63); /* a 63-octet label */
	strcpy(name + 63, ".example");
	assert_true(sl_ca_name_ok(name));
	sl_ca_free(ca);
}

static void test_leaf_invalid_names(void **state)
{
	static const char *const bad[] = {
		"",
		".",
		"..",
		"a..b",
		".a",
		"a.",
		"example.com.",
		"-a.com",
		"a-.com",
		"a.-b.com",
		"a/b",
		"a b",
		" a",
		"a\tb",
		"a\\b",
		"a@b",
		"a;b",
		"a,b",
		"a'b",
		"a\"b",
		"a%b",
		"a.b:443",
		"[::1]",
		"fe80::1%eth0",
		"*.example.com",
		"a*.example.com",
		"a.com\r\nX-Injected: 1",
		"exa\xc3\xa4mple.com",
		"\xff\xfe\xfd",
		"1.2.3.999",
		"1.2.3",
		"01.2.3.4",
		"example.123",
		":::",
		"1::2::3",
	};
	static const char *const good[] = {
		"localhost",
		"a",
		"A",
		"xn--bcher-kva.example",
		"_acme-challenge.example.com",
		"a-b.c_d.example",
		"1a.com",
		"a.1b",
		"10.0.0.1",
		"2001:db8::1",
		"::ffff:1.2.3.4",
	};
	struct sl_ca *ca = new_ca("alpha");
	unsigned char garbage[300];
	struct sl_ca_stats st;
	EVP_PKEY *key;
	X509 *cert;

	(void)state;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		cert = (X509 *)1;
		key = (EVP_PKEY *)1;
		if (sl_ca_name_ok(bad[i]))
			fail_msg("accepted bad name \"%s\"", bad[i]);
		assert_int_equal(sl_ca_leaf(ca, bad[i], &cert, &key), -EINVAL);
		assert_null(cert);
		assert_null(key);
	}
	assert_false(sl_ca_name_ok(NULL)); /* a ClientHello without SNI */
	assert_int_equal(sl_ca_leaf(ca, NULL, &cert, &key), -EINVAL);
	for (size_t i = 0; i < sizeof(garbage) - 1; i++)
		garbage[i] = (unsigned char)(i * 37 + 1) ?: 1;
	garbage[sizeof(garbage) - 1] = 0;
	assert_false(sl_ca_name_ok((const char *)garbage));
	memset(garbage, 'a', sizeof(garbage) - 1); /* 299 octets of a valid label alphabet */
	assert_false(sl_ca_name_ok((const char *)garbage));
	sl_ca_get_stats(ca, &st);
	assert_int_equal(st.misses, 0);
	assert_int_equal(st.entries, 0);

	for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
		if (!sl_ca_name_ok(good[i]))
			fail_msg("refused good name \"%s\"", good[i]);
	}
	sl_ca_free(ca);
}

static void path_in(char *buf, size_t len, const char *dir, const char *name)
{
	snprintf(buf, len, "%s/%s", dir, name);
}

static void rm_dir(const char *dir)
{
	char path[512];
	struct dirent *d;
	DIR *dh = opendir(dir);

	assert_non_null(dh);
	while ((d = readdir(dh))) {
		if (!strcmp(d->d_name, ".") || !strcmp(d->d_name, ".."))
			continue;
		path_in(path, sizeof(path), dir, d->d_name);
		assert_int_equal(unlink(path), 0);
	}
	closedir(dh);
	assert_int_equal(rmdir(dir), 0);
}

static int count_entries(const char *dir)
{
	struct dirent *d;
	DIR *dh = opendir(dir);
	int n = 0;

	assert_non_null(dh);
	while ((d = readdir(dh)))
		n += strcmp(d->d_name, ".") && strcmp(d->d_name, "..");
	closedir(dh);
	return n;
}

static X509 *read_pem_cert(const char *path)
{
	FILE *f = fopen(path, "r");
	X509 *x;

	assert_non_null(f);
	x = PEM_read_X509(f, NULL, NULL, NULL);
	fclose(f);
	assert_non_null(x);
	return x;
}

static void test_save_load(void **state)
{
	char dir[] = "/tmp/sluice-test-ca-XXXXXX", path[512], buf[64];
	struct sl_ca *ca = new_ca("alpha"), *loaded;
	X509 *saved, *x;
	struct stat st;
	mode_t old_umask;
	char *pem;
	int fd;

	(void)state;
	assert_non_null(mkdtemp(dir));
	/* a temporary file left by a crash, world-readable: must not become the key file */
	path_in(path, sizeof(path), dir, ".ca.key.tmp");
	fd = open(path, O_WRONLY | O_CREAT | O_EXCL, 0644);
	assert_true(fd >= 0);
	close(fd);
	old_umask = umask(077);
	assert_int_equal(sl_ca_save(ca, dir), 0);
	umask(old_umask);

	path_in(path, sizeof(path), dir, "ca.key");
	assert_int_equal(lstat(path, &st), 0);
	assert_true(S_ISREG(st.st_mode));
	assert_int_equal(st.st_mode & 07777, 0600);
	assert_int_equal(st.st_uid, geteuid());
	fd = open(path, O_RDONLY);
	assert_true(fd >= 0);
	assert_int_equal(read(fd, buf, 27), 27);
	close(fd);
	assert_memory_equal(buf, "-----BEGIN PRIVATE KEY-----", 27);
	path_in(path, sizeof(path), dir, "ca.pem");
	assert_int_equal(lstat(path, &st), 0);
	assert_int_equal(st.st_mode & 07777, 0644); /* public, whatever the umask */
	assert_int_equal(count_entries(dir), 2); /* no temporary file left */

	saved = read_pem_cert(path);
	assert_int_equal(X509_cmp(saved, sl_ca_cert(ca)), 0);
	pem = sl_ca_cert_pem(ca);
	assert_non_null(pem);
	assert_int_equal(st.st_size, strlen(pem));

	loaded = sl_ca_load(dir);
	assert_non_null(loaded);
	assert_int_equal(X509_cmp(sl_ca_cert(loaded), sl_ca_cert(ca)), 0);
	x = leaf(loaded, "api.example.com");
	assert_int_equal(verify(saved, x, "api.example.com", NULL), X509_V_OK);
	X509_free(x);

	/* saving again replaces both files */
	assert_int_equal(sl_ca_save(loaded, dir), 0);
	assert_int_equal(count_entries(dir), 2);

	free(pem);
	X509_free(saved);
	sl_ca_free(loaded);
	sl_ca_free(ca);
	rm_dir(dir);
}

static void write_file(const char *path, const void *data, size_t len, mode_t mode)
{
	int fd;

	unlink(path);
	fd = open(path, O_WRONLY | O_CREAT | O_EXCL, mode);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, data, len), (ssize_t)len);
	assert_int_equal(fchmod(fd, mode), 0);
	close(fd);
}

static void copy_file(const char *from, const char *to, mode_t mode)
{
	char buf[8192];
	ssize_t n;
	int fd = open(from, O_RDONLY);

	assert_true(fd >= 0);
	n = read(fd, buf, sizeof(buf));
	assert_true(n > 0);
	close(fd);
	write_file(to, buf, n, mode);
}

static void expect_load_error(const char *dir, int err)
{
	errno = 0;
	assert_null(sl_ca_load(dir));
	assert_int_equal(errno, err);
}

static void test_load_refuses(void **state)
{
	char dir[] = "/tmp/sluice-test-ca-XXXXXX", other[] = "/tmp/sluice-test-ca-XXXXXX";
	char key[512], pem[512], okey[512];
	struct sl_ca *ca = new_ca("alpha"), *b = new_ca("beta"), *loaded;
	EVP_PKEY *p384;
	BIO *bio;
	char *data;
	long len;

	(void)state;
	assert_non_null(mkdtemp(dir));
	assert_non_null(mkdtemp(other));
	expect_load_error(dir, ENOENT);
	assert_int_equal(sl_ca_save(ca, dir), 0);
	assert_int_equal(sl_ca_save(b, other), 0);
	path_in(key, sizeof(key), dir, "ca.key");
	path_in(pem, sizeof(pem), dir, "ca.pem");
	path_in(okey, sizeof(okey), other, "ca.key");

	assert_int_equal(chmod(key, 0640), 0);
	expect_load_error(dir, EPERM);
	assert_int_equal(chmod(key, 0604), 0);
	expect_load_error(dir, EPERM);
	assert_int_equal(chmod(key, 0610), 0);
	expect_load_error(dir, EPERM);
	assert_int_equal(chmod(key, 0400), 0); /* stricter is fine */
	loaded = sl_ca_load(dir);
	assert_non_null(loaded);
	sl_ca_free(loaded);
	if (geteuid() == 0) {
		assert_int_equal(chown(key, 1, 1), 0);
		expect_load_error(dir, EPERM);
		assert_int_equal(chown(key, 0, 0), 0);
	}

	/* a symbolic link is not followed */
	assert_int_equal(unlink(key), 0);
	assert_int_equal(symlink(okey, key), 0);
	expect_load_error(dir, ELOOP);
	assert_int_equal(unlink(key), 0);

	/* another sandbox's key with this sandbox's certificate */
	copy_file(okey, key, 0600);
	expect_load_error(dir, EINVAL);

	/* garbage, and a key of the wrong curve */
	write_file(key, "not a key\n", 10, 0600);
	expect_load_error(dir, EINVAL);
	p384 = EVP_EC_gen("P-384");
	assert_non_null(p384);
	bio = BIO_new(BIO_s_mem());
	assert_int_equal(PEM_write_bio_PrivateKey(bio, p384, NULL, NULL, 0, NULL, NULL), 1);
	len = BIO_get_mem_data(bio, &data);
	write_file(key, data, len, 0600);
	expect_load_error(dir, EINVAL);
	BIO_free(bio);
	EVP_PKEY_free(p384);

	/* the key without its certificate */
	copy_file(okey, key, 0600);
	assert_int_equal(unlink(pem), 0);
	expect_load_error(dir, ENOENT);

	ERR_clear_error();
	sl_ca_free(ca);
	sl_ca_free(b);
	rm_dir(dir);
	rm_dir(other);
}

static void test_cert_pem(void **state)
{
	struct sl_ca *ca = new_ca("alpha");
	char *pem = sl_ca_cert_pem(ca);
	BIO *bio;
	X509 *x;

	(void)state;
	assert_non_null(pem);
	assert_memory_equal(pem, "-----BEGIN CERTIFICATE-----\n", 28);
	assert_string_equal(pem + strlen(pem) - 26, "-----END CERTIFICATE-----\n");
	bio = BIO_new_mem_buf(pem, -1);
	x = PEM_read_bio_X509(bio, NULL, NULL, NULL);
	assert_non_null(x);
	assert_int_equal(X509_cmp(x, sl_ca_cert(ca)), 0);
	assert_null(strstr(pem, "PRIVATE"));
	X509_free(x);
	BIO_free(bio);
	free(pem);
	sl_ca_free(ca);
}

/* The server side of the proxy: the leaf is chosen from the SNI, in the SNI callback. */
static int sni_cb(SSL *ssl, int *alert, void *arg)
{
	const char *name = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);

	if (!name || sl_ca_use_leaf(arg, ssl, name)) {
		*alert = SSL_AD_UNRECOGNIZED_NAME;
		return SSL_TLSEXT_ERR_ALERT_FATAL;
	}
	return SSL_TLSEXT_ERR_OK;
}

struct handshake {
	int ok; /* both sides completed */
	long verify; /* the client's verification result */
	int chain_len; /* certificates the client received */
	char cn[256]; /* subject CN of the server's certificate, as the client saw it */
};

/* A server SSL *@s of @sctx and a client SSL *@c of @cctx on the two ends of a new
 * nonblocking socketpair @sv. */
static void ssl_pair(SSL_CTX *sctx, SSL_CTX *cctx, int sv[2], SSL **s, SSL **c)
{
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv), 0);
	*s = SSL_new(sctx);
	*c = SSL_new(cctx);
	assert_non_null(*s);
	assert_non_null(*c);
	SSL_set_fd(*s, sv[0]);
	SSL_set_fd(*c, sv[1]);
	SSL_set_accept_state(*s);
	SSL_set_connect_state(*c);
}

/* Runs the handshake of client @c and server @s (nonblocking, over a socketpair) in turns;
 * whether both completed. */
static int drive_handshake(SSL *c, SSL *s)
{
	int sdone = 0, cdone = 0, failed = 0;

	for (int i = 0; i < 100 && !failed && !(sdone && cdone); i++) {
		int r;

		if (!cdone) {
			r = SSL_do_handshake(c);
			if (r == 1)
				cdone = 1;
			else if (SSL_get_error(c, r) != SSL_ERROR_WANT_READ &&
				 SSL_get_error(c, r) != SSL_ERROR_WANT_WRITE)
				failed = 1;
		}
		if (!sdone && !failed) {
			r = SSL_do_handshake(s);
			if (r == 1)
				sdone = 1;
			else if (SSL_get_error(s, r) != SSL_ERROR_WANT_READ &&
				 SSL_get_error(s, r) != SSL_ERROR_WANT_WRITE)
				failed = 1;
		}
	}
	return sdone && cdone && !failed;
}

/*
 * A TLS handshake over a nonblocking socketpair between a server using @ca through sni_cb and
 * a client trusting only @trusted (given as the PEM users install), sending @sni (if not NULL)
 * and verifying the certificate against @host.
 */
static void handshake(struct sl_ca *ca, struct sl_ca *trusted, const char *sni, const char *host,
		      int max_version, struct handshake *out)
{
	SSL_CTX *sctx = SSL_CTX_new(TLS_server_method()), *cctx = SSL_CTX_new(TLS_client_method());
	char *pem = sl_ca_cert_pem(trusted);
	BIO *bio = BIO_new_mem_buf(pem, -1);
	X509 *anchor = PEM_read_bio_X509(bio, NULL, NULL, NULL);
	int sv[2];
	SSL *s, *c;

	assert_non_null(sctx);
	assert_non_null(cctx);
	assert_non_null(anchor);
	SSL_CTX_set_tlsext_servername_callback(sctx, sni_cb);
	SSL_CTX_set_tlsext_servername_arg(sctx, ca);
	assert_int_equal(X509_STORE_add_cert(SSL_CTX_get_cert_store(cctx), anchor), 1);
	SSL_CTX_set_verify(cctx, SSL_VERIFY_PEER, NULL);
	if (max_version)
		assert_int_equal(SSL_CTX_set_max_proto_version(cctx, max_version), 1);

	ssl_pair(sctx, cctx, sv, &s, &c);
	if (sni)
		assert_int_equal(SSL_set_tlsext_host_name(c, sni), 1);
	assert_int_equal(SSL_set1_host(c, host), 1);

	memset(out, 0, sizeof(*out));
	out->ok = drive_handshake(c, s);
	out->verify = SSL_get_verify_result(c);
	if (SSL_get0_peer_certificate(c)) {
		name_text(X509_get_subject_name(SSL_get0_peer_certificate(c)), NID_commonName,
			  out->cn, sizeof(out->cn));
		out->chain_len = sk_X509_num(SSL_get_peer_cert_chain(c));
	}
	ERR_clear_error();
	SSL_free(s);
	SSL_free(c);
	close(sv[0]);
	close(sv[1]);
	X509_free(anchor);
	BIO_free(bio);
	free(pem);
	SSL_CTX_free(sctx);
	SSL_CTX_free(cctx);
}

static void test_tls_handshake(void **state)
{
	struct sl_ca *a = new_ca("alpha"), *b = new_ca("beta");
	struct handshake h;

	(void)state;
	handshake(a, a, "api.example.com", "api.example.com", 0, &h);
	assert_true(h.ok);
	assert_int_equal(h.verify, X509_V_OK);
	assert_string_equal(h.cn, "api.example.com");
	assert_int_equal(h.chain_len, 1); /* the leaf: the client holds the CA itself */

	handshake(a, a, "api.example.com", "api.example.com", TLS1_2_VERSION, &h);
	assert_true(h.ok);
	assert_int_equal(h.verify, X509_V_OK);

	/* a client of sandbox beta does not accept sandbox alpha's leaves */
	handshake(a, b, "api.example.com", "api.example.com", 0, &h);
	assert_false(h.ok);
	assert_int_not_equal(h.verify, X509_V_OK);

	/* a leaf for the SNI is no good for another name */
	handshake(a, a, "api.example.com", "evil.example.com", 0, &h);
	assert_false(h.ok);
	assert_int_equal(h.verify, X509_V_ERR_HOSTNAME_MISMATCH);

	/* a hostile SNI ends the handshake and nothing else */
	handshake(a, a, "a..b/../x", "a..b/../x", 0, &h);
	assert_false(h.ok);
	handshake(a, a, NULL, "api.example.com", 0, &h);
	assert_false(h.ok);
	handshake(a, a, "api.example.com", "api.example.com", 0, &h);
	assert_true(h.ok);

	sl_ca_free(a);
	sl_ca_free(b);
}

/*
 * A handshake between the proxy's server context, set up as the proxy does it
 * (sl_ca_use_leaf() for @name before the handshake), and a client trusting @anchors that
 * offers @offer (NULL: none) and sends @name as SNI, up to @max_version (0: TLS 1.3). Reads
 * one byte from the server so that a TLS 1.3 ticket arrives; *@out (if not NULL) gets the
 * client's session after it. Returns 1 if the session was resumed, 0 for a full handshake,
 * -1 if the handshake failed.
 */
static int tls_session(SSL_CTX *sctx, struct sl_ca *ca, X509 **anchors, const char *name,
		       int max_version, SSL_SESSION *offer, SSL_SESSION **out)
{
	SSL_CTX *cctx = SSL_CTX_new(TLS_client_method());
	int sv[2], reused = -1;
	char byte = 0;
	SSL *s, *c;

	assert_non_null(cctx);
	for (int i = 0; anchors[i]; i++)
		assert_int_equal(X509_STORE_add_cert(SSL_CTX_get_cert_store(cctx), anchors[i]), 1);
	SSL_CTX_set_verify(cctx, SSL_VERIFY_PEER, NULL);
	if (max_version)
		assert_int_equal(SSL_CTX_set_max_proto_version(cctx, max_version), 1);
	ssl_pair(sctx, cctx, sv, &s, &c);
	assert_int_equal(sl_ca_use_leaf(ca, s, name), 0);
	assert_int_equal(SSL_set_tlsext_host_name(c, name), 1);
	assert_int_equal(SSL_set1_host(c, name), 1);
	if (offer)
		assert_int_equal(SSL_set_session(c, offer), 1);
	if (drive_handshake(c, s)) {
		sl_tls_ticket(s); /* as the proxy does: the ticket leaves with the first write */
		assert_int_equal(SSL_write(s, "x", 1), 1);
		assert_int_equal(SSL_read(c, &byte, 1), 1);
		assert_int_equal(byte, 'x');
		assert_int_equal(SSL_session_reused(s), SSL_session_reused(c));
		reused = SSL_session_reused(c);
		if (out)
			*out = SSL_get1_session(c);
		/* a clean close: a session whose connection was not shut down cannot resume */
		SSL_shutdown(c);
	}
	ERR_clear_error();
	SSL_free(s);
	SSL_free(c);
	close(sv[0]);
	close(sv[1]);
	SSL_CTX_free(cctx);
	return reused;
}

static void test_tls_resumption(void **state)
{
	struct sl_ca *a = new_ca("alpha"), *b = new_ca("beta");
	X509 *anchors[] = { sl_ca_cert(a), sl_ca_cert(b), NULL };
	SSL_SESSION *s1 = NULL, *s2 = NULL, *other = NULL;
	char err[256];
	SSL_CTX *sctx = sl_tls_server_ctx(err, sizeof(err));
	const char *name = "api.example.com";
	time_t start = time(NULL);

	(void)state;
	assert_non_null(sctx);
	sl_ca_set_clock(a, fake_clock);
	fake_now = start;
	for (int v = 0; v <= 1; v++) {
		int max = v ? TLS1_2_VERSION : 0;

		assert_int_equal(tls_session(sctx, a, anchors, name, max, NULL, &s1), 0);
		assert_true(SSL_SESSION_is_resumable(s1));
		/* the same sandbox and name: resumed, by either TLS version */
		assert_int_equal(tls_session(sctx, a, anchors, name, max, s1, NULL), 1);
		/* another sandbox's proxy: its keys do not open the ticket, a full handshake */
		assert_int_equal(tls_session(sctx, b, anchors, name, max, s1, NULL), 0);
		/* the same sandbox, another name (a client offering it anyway): full handshake */
		other = SSL_SESSION_dup(s1);
		assert_non_null(other);
		assert_int_equal(SSL_SESSION_set1_hostname(other, "other.example.com"), 1);
		assert_int_equal(
			tls_session(sctx, a, anchors, "other.example.com", max, other, NULL), 0);
		SSL_SESSION_free(other);
		SSL_SESSION_free(s1);
	}

	/* Rotation: after a period the previous key still opens the ticket (and the client gets
	 * one under the new key); after two, the first key is gone. */
	assert_int_equal(tls_session(sctx, a, anchors, name, 0, NULL, &s1), 0);
	fake_now += SL_CA_TICKET_ROTATE_S + 1;
	assert_int_equal(tls_session(sctx, a, anchors, name, 0, s1, &s2), 1);
	fake_now += SL_CA_TICKET_ROTATE_S + 1;
	assert_int_equal(tls_session(sctx, a, anchors, name, 0, s1, NULL), 0);
	assert_int_equal(tls_session(sctx, a, anchors, name, 0, s2, NULL), 1);
	/* a clock set back makes new keys too: no ticket sealed "in the future" opens */
	fake_now = start;
	assert_int_equal(tls_session(sctx, a, anchors, name, 0, s2, NULL), 0);

	SSL_SESSION_free(s1);
	SSL_SESSION_free(s2);
	SSL_CTX_free(sctx);
	sl_ca_free(a);
	sl_ca_free(b);
}

struct worker {
	struct sl_ca *ca;
	int id, failures;
};

static void *mint_worker(void *arg)
{
	struct worker *w = arg;
	char name[64];

	for (int i = 0; i < 300; i++) {
		EVP_PKEY *key;
		X509 *x;

		snprintf(name, sizeof(name), "h%d.example.com", (i * 7 + w->id * 13) % 40);
		if (sl_ca_leaf(w->ca, name, &x, &key) ||
		    X509_check_host(x, name, 0, 0, NULL) != 1 ||
		    X509_check_private_key(x, key) != 1)
			w->failures++;
		X509_free(x);
		EVP_PKEY_free(key);
	}
	return NULL;
}

static void test_threads(void **state)
{
	struct sl_ca *ca = new_ca("alpha");
	struct worker w[4];
	pthread_t t[4];
	struct sl_ca_stats st;

	(void)state;
	assert_int_equal(sl_ca_set_cache_capacity(ca, 16), 0);
	for (int i = 0; i < 4; i++) {
		w[i] = (struct worker){ .ca = ca, .id = i };
		assert_int_equal(pthread_create(&t[i], NULL, mint_worker, &w[i]), 0);
	}
	for (int i = 0; i < 4; i++) {
		assert_int_equal(pthread_join(t[i], NULL), 0);
		assert_int_equal(w[i].failures, 0);
	}
	sl_ca_get_stats(ca, &st);
	assert_int_equal(st.hits + st.misses, 4 * 300);
	assert_int_equal(st.entries, 16);
	assert_int_equal(st.misses - st.entries, st.evictions);
	sl_ca_free(ca);
}

/* A thread of test_cas_on_threads(): CAs made at once with the others, each checked (its
 * certificate self-signed, a leaf it mints signed by the key in that certificate). */
static void *ca_maker(void *arg)
{
	struct worker *w = arg;

	for (int i = 0; i < 12; i++) {
		struct sl_ca *ca = sl_ca_new("threads");
		EVP_PKEY *key = NULL;
		X509 *x = NULL;

		if (!ca || X509_verify(sl_ca_cert(ca), X509_get0_pubkey(sl_ca_cert(ca))) != 1 ||
		    sl_ca_leaf(ca, "t.example.com", &x, &key) ||
		    X509_verify(x, X509_get0_pubkey(sl_ca_cert(ca))) != 1 ||
		    X509_check_private_key(x, key) != 1)
			w->failures++;
		X509_free(x);
		EVP_PKEY_free(key);
		sl_ca_free(ca);
	}
	return NULL;
}

/* New CAs share the P-256 parameters made once for the process (ca.c: p256_gen()). */
static void test_cas_on_threads(void **state)
{
	struct worker w[4];
	pthread_t t[4];

	(void)state;
	for (int i = 0; i < 4; i++) {
		w[i] = (struct worker){ .id = i };
		assert_int_equal(pthread_create(&t[i], NULL, ca_maker, &w[i]), 0);
	}
	for (int i = 0; i < 4; i++) {
		assert_int_equal(pthread_join(t[i], NULL), 0);
		assert_int_equal(w[i].failures, 0);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_ca_certificate),
		cmocka_unit_test(test_ca_sandbox_names),
		cmocka_unit_test(test_leaf_verifies),
		cmocka_unit_test(test_leaf_other_sandbox_refused),
		cmocka_unit_test(test_leaf_keys),
		cmocka_unit_test(test_cache_hit),
		cmocka_unit_test(test_cache_grows),
		cmocka_unit_test(test_cache_lru),
		cmocka_unit_test(test_cache_renewal),
		cmocka_unit_test(test_leaf_ip_literals),
		cmocka_unit_test(test_leaf_long_name),
		cmocka_unit_test(test_leaf_invalid_names),
		cmocka_unit_test(test_save_load),
		cmocka_unit_test(test_load_refuses),
		cmocka_unit_test(test_cert_pem),
		cmocka_unit_test(test_tls_handshake),
		cmocka_unit_test(test_tls_resumption),
		cmocka_unit_test(test_threads),
		cmocka_unit_test(test_cas_on_threads),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}

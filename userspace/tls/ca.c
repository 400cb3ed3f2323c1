// SPDX-License-Identifier: MIT
/*
 * The certificate authority of each sandbox. To read a sandbox's intercepted TLS, sluiced
 * presents a certificate for the name the client asked for, issued by a CA that only this
 * sandbox trusts: a leaked leaf or CA compromises one sandbox, not the host or another
 * sandbox. The CA key and the sandbox's one leaf key are generated when the sandbox is added;
 * after that no key is ever generated, and a leaf costs one signature, minted the first time a
 * name is seen and then served from a bounded LRU cache.
 *
 * Minting builds the certificate with the X509 API from parts prepared once per CA (issuer
 * name, constant extensions, the leaf public key in a cheap form: see cheap_pub_new()), so a
 * leaf is a handful of small allocations and one ECDSA P-256 signature.
 *
 * The CA also holds the sandbox's session ticket keys (see ca.h): a resumed handshake costs
 * no signature and no certificate at all, and a ticket opens in its own sandbox only.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/objects.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "tls/ca.h"
#include "core/file.h"
#include "core/list.h"
#include "core/log.h"

#define CA_LIFETIME_S (3653 * 86400L) /* ten years */
#define BACKDATE_S 3600 /* clients whose clock runs a little late still accept a new cert */
#define CN_MAX 64 /* ub-common-name (RFC 5280 appendix A.1) */
#define SANDBOX_NAME_MAX 64
#define FILE_MAX_BYTES (64 * 1024)

enum { HOST_DNS, HOST_IP4, HOST_IP6 };

/* A validated name in canonical form: lower case, IP literals as inet_ntop() writes them. */
struct host {
	int kind;
	size_t len;
	unsigned char ip[16];
	char name[SL_CA_HOST_MAX + 1];
};

/* A cached leaf: in its hash bucket's chain and in the LRU list (most recent first). */
struct leaf {
	struct leaf *hnext;
	struct sl_list lru;
	X509 *cert;
	time_t not_before_s, not_after_s;
	uint64_t hash;
	size_t len;
	char name[];
};

enum { EXT_BC, EXT_KU, EXT_EKU, EXT_AKID, EXT_N };

/* A session ticket key: its name (sent in the clear in each ticket), AES-256-CBC and
 * HMAC-SHA256 keys (RFC 5077 section 4's recommended construction, what OpenSSL's own
 * tickets use). */
struct ticket_key {
	unsigned char name[16];
	unsigned char aes[32];
	unsigned char hmac[32];
	time_t born_s; /* 0: no key */
};

struct sl_ca {
	pthread_mutex_t lock; /* the cache, the counters and every use of @key */
	EVP_PKEY *key; /* the CA key */
	X509 *cert;
	EVP_PKEY *leaf_key; /* private key of every leaf of this sandbox */
	EVP_PKEY *leaf_pub; /* its public half, as leaves carry it (cheap_pub_new()) */
	X509_EXTENSION *ext[EXT_N]; /* the extensions every leaf has */
	char *pem;
	time_t (*now_s)(void);
	unsigned char id[32]; /* SHA-256 of the CA certificate: the sandbox's session contexts */
	struct ticket_key tk[2]; /* [0] seals and opens, [1] the previous one: opens only */

	struct leaf **buckets;
	size_t nbuckets; /* a power of two */
	uint64_t seed; /* of the bucket hash: a client choosing names cannot aim at one bucket */
	struct sl_list lru; /* of struct leaf, most recent first */
	size_t count, capacity;
	uint64_t hits, misses, evictions, renewals;
};

/* Logs the last OpenSSL error for @what; returns -ENOMEM or -EIO. */
static int ossl_err(const char *what)
{
	unsigned long e = ERR_peek_last_error();
	const char *reason = ERR_reason_error_string(e);

	sl_err("ca: %s failed: %s", what, reason ? reason : "unknown OpenSSL error");
	ERR_clear_error();
	return ERR_GET_REASON(e) == ERR_R_MALLOC_FAILURE ? -ENOMEM : -EIO;
}

/* Parses @in (NULL: no SNI) into @h. Host names follow RFC 1123 2.1 plus '_' (seen in the wild, harmless):
 * labels of 1..63 letters, digits, '-' or '_', not starting or ending with '-'; a last label
 * made of digits only would be an IPv4 literal in disguise (RFC 3696 2) and is refused. */
static int parse_host(const char *in, struct host *h)
{
	size_t n = in ? strnlen(in, SL_CA_HOST_MAX + 1) : 0, label = 0;
	int digits = 1;

	if (!n || n > SL_CA_HOST_MAX)
		return -EINVAL;
	if (inet_pton(AF_INET, in, h->ip) == 1 ||
	    (strchr(in, ':') && inet_pton(AF_INET6, in, h->ip) == 1)) {
		h->kind = strchr(in, ':') ? HOST_IP6 : HOST_IP4;
		inet_ntop(h->kind == HOST_IP6 ? AF_INET6 : AF_INET, h->ip, h->name,
			  sizeof(h->name));
		h->len = strlen(h->name);
		return 0;
	}
	for (size_t i = 0; i <= n; i++) {
		char c = in[i];

		if (c == '.' || !c) {
			if (!label || label > 63 || in[i - 1] == '-')
				return -EINVAL;
			h->name[i] = c;
			label = 0;
			if (c)
				digits = 1;
			continue;
		}
		if (c >= 'A' && c <= 'Z')
			c += 'a' - 'A';
		if (c == '-' ? !label :
			       !((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_'))
			return -EINVAL;
		if (c < '0' || c > '9')
			digits = 0;
		h->name[i] = c;
		label++;
	}
	if (digits)
		return -EINVAL;
	h->kind = HOST_DNS;
	h->len = n;
	return 0;
}

int sl_ca_name_ok(const char *name)
{
	struct host h;

	return !parse_host(name, &h);
}

/* A random positive 126-bit serial: 16 octets, the first in 0x40..0x7f so that the DER is
 * minimal and the length constant (RFC 5280 4.1.2.2: at most 20 octets). */
static int rand_serial(ASN1_INTEGER *serial)
{
	unsigned char b[16];

	if (RAND_bytes(b, sizeof(b)) != 1)
		return -EIO;
	b[0] = (b[0] & 0x3f) | 0x40;
	return ASN1_STRING_set(serial, b, sizeof(b)) ? 0 : -ENOMEM;
}

static int add_ext(X509 *x, X509V3_CTX *v3, int nid, const char *value)
{
	X509_EXTENSION *ext = X509V3_EXT_nconf_nid(NULL, v3, nid, value);
	int ok = ext && X509_add_ext(x, ext, -1);

	X509_EXTENSION_free(ext);
	return ok ? 0 : -EIO;
}

/*
 * P-256 once for the process: its parameters as a provider key (every key is generated from
 * it) and as a legacy one (cheap_pub_new() copies them from it). Built from the curve's name,
 * the group costs a Montgomery context and a modular inverse each time (EVP_EC_gen(), and
 * EVP_PKEY_copy_parameters() from a provider key into a legacy one): 40% of a new CA's time
 * went to that, for its own key and its leaf key. Made under pthread_once and only read after
 * (OpenSSL reads a key shared by threads without writing it: openssl-threads(7)); NULL if the
 * library would not make them, and each caller falls back to the curve's name.
 */
static EVP_PKEY *p256, *p256_legacy;
static pthread_once_t p256_once = PTHREAD_ONCE_INIT;

static void p256_init(void)
{
	EVP_PKEY_CTX *c = EVP_PKEY_CTX_new_from_name(NULL, "EC", NULL);
	EVP_PKEY *legacy = EVP_PKEY_new();

	if (!c || EVP_PKEY_paramgen_init(c) <= 0 || EVP_PKEY_CTX_set_group_name(c, "P-256") <= 0 ||
	    EVP_PKEY_paramgen(c, &p256) <= 0)
		p256 = NULL;
	if (p256 && legacy && EVP_PKEY_set_type(legacy, EVP_PKEY_EC) &&
	    EVP_PKEY_copy_parameters(legacy, p256)) {
		p256_legacy = legacy;
		legacy = NULL;
	}
	EVP_PKEY_free(legacy);
	EVP_PKEY_CTX_free(c);
	ERR_clear_error();
}

/* A new P-256 key. NULL on failure (OpenSSL's error queue says why). */
static EVP_PKEY *p256_gen(void)
{
	EVP_PKEY_CTX *c;
	EVP_PKEY *k = NULL;

	pthread_once(&p256_once, p256_init);
	if (!p256)
		return EVP_EC_gen("P-256");
	c = EVP_PKEY_CTX_new_from_pkey(NULL, p256, NULL);
	if (!c || EVP_PKEY_keygen_init(c) <= 0 || EVP_PKEY_generate(c, &k) <= 0)
		k = NULL;
	EVP_PKEY_CTX_free(c);
	return k;
}

/*
 * A key's public half in the form that X509_set_pubkey() takes cheaply: the leaf key's, once
 * per CA, and the CA key's for its own certificate (half of a new CA's 586 us went to setting
 * that key). OpenSSL 3.0 sets a provider-backed key by encoding it with OSSL_ENCODER and
 * decoding it back with OSSL_DECODER, about 140 us per certificate spent mostly in provider
 * look-ups (and d2i of an EC SubjectPublicKeyInfo costs 85 us, which is why leaves are built,
 * not parsed). A key with a legacy method is encoded directly, in 3 us; copying the
 * parameters into an EVP_PKEY_EC typed key and setting its point makes one from public,
 * non-deprecated calls. If the library does not produce an equal key that way (a later
 * OpenSSL), the provider key is used: slower, equally correct.
 */
/* Whether @pub is the P-256 public key @point (uncompressed, 65 bytes): its
 * SubjectPublicKeyInfo, which a legacy key encodes directly, is the named curve's prefix and
 * the point. */
static int p256_spki_is(EVP_PKEY *pub, const unsigned char *point, size_t len)
{
	static const unsigned char prefix[] = { 0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a,
						0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06,
						0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03,
						0x01, 0x07, 0x03, 0x42, 0x00 };
	unsigned char *der = NULL;
	int n = i2d_PUBKEY(pub, &der), ok;

	ok = len == 65 && n == (int)(sizeof(prefix) + len) &&
	     !memcmp(der, prefix, sizeof(prefix)) && !memcmp(der + sizeof(prefix), point, len);
	OPENSSL_free(der);
	return ok;
}

static EVP_PKEY *cheap_pub_new(EVP_PKEY *key)
{
	unsigned char point[133];
	char group[32];
	EVP_PKEY *pub = EVP_PKEY_new();
	size_t len;
	int same;

	pthread_once(&p256_once, p256_init);
	if (pub &&
	    EVP_PKEY_get_octet_string_param(key, OSSL_PKEY_PARAM_ENCODED_PUBLIC_KEY, point,
					    sizeof(point), &len) &&
	    EVP_PKEY_set_type(pub, EVP_PKEY_EC)) {
		/* A P-256 key takes its parameters from the template and is checked by its
		 * encoding (EVP_PKEY_eq() would build the group again to compare); any other,
		 * from itself, checked by EVP_PKEY_eq(). */
		if (p256_legacy && EVP_PKEY_get_group_name(key, group, sizeof(group), NULL) &&
		    (!strcmp(group, "prime256v1") || !strcmp(group, "P-256")))
			same = EVP_PKEY_copy_parameters(pub, p256_legacy) &&
			       EVP_PKEY_set1_encoded_public_key(pub, point, len) &&
			       p256_spki_is(pub, point, len);
		else
			same = EVP_PKEY_copy_parameters(pub, key) &&
			       EVP_PKEY_set1_encoded_public_key(pub, point, len) &&
			       EVP_PKEY_eq(pub, key) == 1;
		if (same)
			return pub;
	}
	ERR_clear_error();
	EVP_PKEY_free(pub);
	return EVP_PKEY_up_ref(key) ? key : NULL;
}

/*
 * The self-signed CA certificate. Its basic constraints carry pathLenConstraint 0: it signs
 * leaves only. No name constraints: the names a sandbox may reach change at run time (an
 * outboundHandlers entry replaces the intercept list), and the CA sits in trust stores that
 * would have to be updated each time.
 */
static X509 *ca_cert_new(EVP_PKEY *key, const char *sandbox)
{
	time_t now = time(NULL);
	EVP_PKEY *pub = cheap_pub_new(key);
	X509_NAME *name;
	X509V3_CTX v3;
	char cn[CN_MAX + 1];
	X509 *x;
	int err;

	if (strlen("sluice sandbox  CA") + strlen(sandbox) <= CN_MAX)
		snprintf(cn, sizeof(cn), "sluice sandbox %s CA", sandbox);
	else
		snprintf(cn, sizeof(cn), "sluice sandbox CA");
	x = X509_new();
	if (!x || !pub) {
		X509_free(x);
		EVP_PKEY_free(pub);
		errno = ENOMEM;
		return NULL;
	}
	name = X509_get_subject_name(x);
	if (!X509_set_version(x, X509_VERSION_3) || rand_serial(X509_get_serialNumber(x)) ||
	    !X509_NAME_add_entry_by_NID(name, NID_organizationName, MBSTRING_ASC,
					(const unsigned char *)"sluice", -1, -1, 0) ||
	    !X509_NAME_add_entry_by_NID(name, NID_organizationalUnitName, MBSTRING_ASC,
					(const unsigned char *)sandbox, -1, -1, 0) ||
	    !X509_NAME_add_entry_by_NID(name, NID_commonName, MBSTRING_ASC,
					(const unsigned char *)cn, -1, -1, 0) ||
	    !X509_set_issuer_name(x, name) ||
	    !ASN1_TIME_set(X509_getm_notBefore(x), now - BACKDATE_S) ||
	    !ASN1_TIME_set(X509_getm_notAfter(x), now + CA_LIFETIME_S) || !X509_set_pubkey(x, pub))
		goto fail;
	X509V3_set_ctx(&v3, x, x, NULL, NULL, 0);
	if (add_ext(x, &v3, NID_basic_constraints, "critical,CA:TRUE,pathlen:0") ||
	    add_ext(x, &v3, NID_key_usage, "critical,keyCertSign,cRLSign") ||
	    add_ext(x, &v3, NID_subject_key_identifier, "hash") || !X509_sign(x, key, EVP_sha256()))
		goto fail;
	EVP_PKEY_free(pub);
	return x;
fail:
	err = ossl_err("CA certificate");
	X509_free(x);
	EVP_PKEY_free(pub);
	errno = -err;
	return NULL;
}

static int is_p256(EVP_PKEY *key)
{
	char group[64];
	size_t len;
	int nid;

	if (!EVP_PKEY_is_a(key, "EC") || !EVP_PKEY_get_group_name(key, group, sizeof(group), &len))
		return 0;
	nid = OBJ_sn2nid(group);
	if (nid == NID_undef)
		nid = EC_curve_nist2nid(group);
	return nid == NID_X9_62_prime256v1;
}

/* Rehashes the cached leaves into the power of two >= @want (at least 16) buckets. */
static int resize_buckets(struct sl_ca *ca, size_t want)
{
	size_t n = 16;
	struct leaf **b, *e;

	while (n < want)
		n <<= 1;
	b = calloc(n, sizeof(*b));
	if (!b)
		return -ENOMEM;
	free(ca->buckets);
	ca->buckets = b;
	ca->nbuckets = n;
	sl_list_for_each(e, &ca->lru, lru) {
		struct leaf **head = &b[e->hash & (n - 1)];

		e->hnext = *head;
		*head = e;
	}
	return 0;
}

/* Everything a CA needs besides its key and certificate: the leaf key and the parts of every
 * leaf. The only place, with ca_cert_new(), where keys are generated. */
static int ca_prepare(struct sl_ca *ca)
{
	const ASN1_OCTET_STRING *skid = X509_get0_subject_key_id(ca->cert);
	AUTHORITY_KEYID *akid = NULL;
	X509V3_CTX v3;
	BIO *bio = NULL;
	char *data;
	long len;
	int err = 0;

	/* The buckets grow with the leaves (cache_put()): a sandbox that never has a connection
	 * intercepted holds 16 of them, not SL_CA_CACHE_DEFAULT. */
	ca->capacity = SL_CA_CACHE_DEFAULT;
	err = resize_buckets(ca, 16);
	if (err)
		return err;
	if (RAND_bytes((unsigned char *)&ca->seed, sizeof(ca->seed)) != 1)
		return ossl_err("random seed");
	if (!skid) {
		sl_err("ca: the CA certificate has no subject key identifier");
		return -EINVAL;
	}
	if (!X509_digest(ca->cert, EVP_sha256(), ca->id, NULL))
		return ossl_err("CA certificate digest");
	ca->leaf_key = p256_gen();
	if (!ca->leaf_key)
		return ossl_err("leaf key generation");
	ca->leaf_pub = cheap_pub_new(ca->leaf_key);
	if (!ca->leaf_pub)
		return -ENOMEM;

	X509V3_set_ctx(&v3, ca->cert, NULL, NULL, NULL, 0);
	ca->ext[EXT_BC] =
		X509V3_EXT_nconf_nid(NULL, &v3, NID_basic_constraints, "critical,CA:FALSE");
	ca->ext[EXT_KU] =
		X509V3_EXT_nconf_nid(NULL, &v3, NID_key_usage, "critical,digitalSignature");
	ca->ext[EXT_EKU] = X509V3_EXT_nconf_nid(NULL, &v3, NID_ext_key_usage, "serverAuth");
	akid = AUTHORITY_KEYID_new();
	if (akid) {
		akid->keyid = ASN1_OCTET_STRING_dup(skid);
		if (akid->keyid)
			ca->ext[EXT_AKID] = X509V3_EXT_i2d(NID_authority_key_identifier, 0, akid);
	}
	for (int i = 0; i < EXT_N; i++) {
		if (!ca->ext[i]) {
			err = ossl_err("leaf extensions");
			goto cleanup;
		}
	}

	bio = BIO_new(BIO_s_mem());
	if (!bio || !PEM_write_bio_X509(bio, ca->cert)) {
		err = ossl_err("CA certificate PEM");
		goto cleanup;
	}
	len = BIO_get_mem_data(bio, &data);
	ca->pem = malloc(len + 1);
	if (!ca->pem) {
		err = -ENOMEM;
		goto cleanup;
	}
	memcpy(ca->pem, data, len);
	ca->pem[len] = 0;
cleanup:
	BIO_free(bio);
	AUTHORITY_KEYID_free(akid);
	return err;
}

static struct sl_ca *ca_alloc(void)
{
	struct sl_ca *ca = calloc(1, sizeof(*ca));

	if (!ca)
		return NULL;
	if (pthread_mutex_init(&ca->lock, NULL)) {
		free(ca);
		return NULL;
	}
	sl_list_init(&ca->lru);
	return ca;
}

struct sl_ca *sl_ca_new(const char *sandbox_name)
{
	size_t n = strnlen(sandbox_name, SANDBOX_NAME_MAX + 1);
	struct sl_ca *ca = NULL;
	int err = 0;

	if (!n || n > SANDBOX_NAME_MAX) {
		errno = EINVAL;
		return NULL;
	}
	for (size_t i = 0; i < n; i++) {
		if (sandbox_name[i] < 0x20 || sandbox_name[i] > 0x7e) {
			errno = EINVAL;
			return NULL;
		}
	}
	ca = ca_alloc();
	if (!ca) {
		errno = ENOMEM;
		return NULL;
	}
	ca->key = p256_gen();
	if (!ca->key) {
		err = ossl_err("CA key generation");
		goto cleanup;
	}
	ca->cert = ca_cert_new(ca->key, sandbox_name);
	if (!ca->cert) {
		err = -errno;
		goto cleanup;
	}
	err = ca_prepare(ca);
cleanup:
	if (err) {
		sl_ca_free(ca);
		errno = -err;
		return NULL;
	}
	return ca;
}

void sl_ca_free(struct sl_ca *ca)
{
	struct leaf *e, *tmp;

	if (!ca)
		return;
	sl_list_for_each_safe(e, tmp, &ca->lru, lru) {
		X509_free(e->cert);
		free(e);
	}
	free(ca->buckets);
	for (int i = 0; i < EXT_N; i++)
		X509_EXTENSION_free(ca->ext[i]);
	EVP_PKEY_free(ca->leaf_pub);
	EVP_PKEY_free(ca->leaf_key);
	X509_free(ca->cert);
	EVP_PKEY_free(ca->key);
	free(ca->pem);
	OPENSSL_cleanse(ca->tk, sizeof(ca->tk));
	pthread_mutex_destroy(&ca->lock);
	free(ca);
}

X509 *sl_ca_cert(const struct sl_ca *ca)
{
	return ca->cert;
}

char *sl_ca_cert_pem(const struct sl_ca *ca)
{
	return strdup(ca->pem);
}

/* The subject alternative name: the one name of the leaf (RFC 5280 4.2.1.6: critical when the
 * subject is empty, as it is for names longer than a common name may be). */
static int add_san(X509 *x, const struct host *h)
{
	int dns = h->kind == HOST_DNS;
	GENERAL_NAMES *gens = sk_GENERAL_NAME_new_null();
	GENERAL_NAME *gen = GENERAL_NAME_new();
	ASN1_STRING *val = dns ? ASN1_IA5STRING_new() : ASN1_OCTET_STRING_new();
	int ok;

	ok = gens && gen && val &&
	     ASN1_STRING_set(val, dns ? (const void *)h->name : h->ip,
			     dns		 ? (int)h->len :
			     h->kind == HOST_IP4 ? 4 :
						   16);
	if (ok) {
		GENERAL_NAME_set0_value(gen, dns ? GEN_DNS : GEN_IPADD, val);
		val = NULL;
		ok = sk_GENERAL_NAME_push(gens, gen) > 0;
		if (ok)
			gen = NULL;
	}
	ok = ok && X509_add1_ext_i2d(x, NID_subject_alt_name, gens, h->len > CN_MAX,
				     X509V3_ADD_APPEND) == 1;
	ASN1_STRING_free(val);
	GENERAL_NAME_free(gen);
	GENERAL_NAMES_free(gens);
	return ok ? 0 : -ENOMEM;
}

/* A new leaf for @h, valid from @now - BACKDATE_S for SL_CA_LEAF_LIFETIME_S. Caller holds the
 * lock (the CA key's signing state is not shared between threads). */
static X509 *leaf_mint(struct sl_ca *ca, const struct host *h, time_t now)
{
	X509 *x = X509_new();
	int ok;

	ok = x && X509_set_version(x, X509_VERSION_3) && !rand_serial(X509_get_serialNumber(x)) &&
	     X509_set_issuer_name(x, X509_get_subject_name(ca->cert)) &&
	     ASN1_TIME_set(X509_getm_notBefore(x), now - BACKDATE_S) &&
	     ASN1_TIME_set(X509_getm_notAfter(x), now + SL_CA_LEAF_LIFETIME_S) &&
	     (h->len > CN_MAX ||
	      X509_NAME_add_entry_by_NID(X509_get_subject_name(x), NID_commonName, MBSTRING_ASC,
					 (const unsigned char *)h->name, h->len, -1, 0)) &&
	     X509_set_pubkey(x, ca->leaf_pub);
	for (int i = 0; ok && i < EXT_N; i++)
		ok = X509_add_ext(x, ca->ext[i], -1);
	ok = ok && !add_san(x, h) && X509_sign(x, ca->key, EVP_sha256());
	if (!ok) {
		errno = -ossl_err("leaf minting");
		X509_free(x);
		return NULL;
	}
	return x;
}

/* Seeded FNV-1a, then a multiply-xorshift so that the low bits (the bucket) depend on all. */
static uint64_t name_hash(const struct sl_ca *ca, const char *s, size_t n)
{
	uint64_t h = 0xcbf29ce484222325ull ^ ca->seed;

	for (size_t i = 0; i < n; i++)
		h = (h ^ (unsigned char)s[i]) * 0x100000001b3ull;
	h ^= h >> 32;
	h *= 0xd6e8feb86659fd93ull;
	return h ^ (h >> 32);
}

static struct leaf *cache_find(struct sl_ca *ca, const struct host *h, uint64_t hash)
{
	for (struct leaf *e = ca->buckets[hash & (ca->nbuckets - 1)]; e; e = e->hnext)
		if (e->hash == hash && e->len == h->len && !memcmp(e->name, h->name, h->len))
			return e;
	return NULL;
}

static void cache_remove(struct sl_ca *ca, struct leaf *e)
{
	struct leaf **p = &ca->buckets[e->hash & (ca->nbuckets - 1)];

	while (*p != e)
		p = &(*p)->hnext;
	*p = e->hnext;
	sl_list_del(&e->lru);
	ca->count--;
	X509_free(e->cert);
	free(e);
}

static void cache_evict(struct sl_ca *ca, size_t capacity)
{
	while (ca->count > capacity) {
		cache_remove(ca, sl_list_last(&ca->lru, struct leaf, lru));
		ca->evictions++;
	}
}

static time_t ca_now(const struct sl_ca *ca)
{
	return ca->now_s ? ca->now_s() : time(NULL);
}

/* sl_ca_leaf() of a parsed name. */
static int leaf_get(struct sl_ca *ca, const struct host *h, X509 **cert, EVP_PKEY **key)
{
	struct leaf *e;
	uint64_t hash;
	time_t now;
	X509 *x;
	int err = 0;

	*cert = NULL;
	*key = NULL;
	hash = name_hash(ca, h->name, h->len);

	pthread_mutex_lock(&ca->lock);
	now = ca_now(ca);
	e = cache_find(ca, h, hash);
	/* A clock set back past the start of the validity also asks for a new leaf. */
	if (e && now >= e->not_before_s && e->not_after_s - now >= SL_CA_LEAF_RENEW_S) {
		ca->hits++;
		sl_list_del(&e->lru);
		sl_list_add(&ca->lru, &e->lru);
		x = e->cert;
		goto found;
	}
	ca->misses++;
	if (e) {
		ca->renewals++;
		cache_remove(ca, e);
	}
	x = leaf_mint(ca, h, now);
	e = x ? malloc(sizeof(*e) + h->len + 1) : NULL;
	if (!e) {
		err = x ? -ENOMEM : -errno;
		X509_free(x);
		goto unlock;
	}
	e->cert = x;
	e->not_before_s = now - BACKDATE_S;
	e->not_after_s = now + SL_CA_LEAF_LIFETIME_S;
	e->hash = hash;
	e->len = h->len;
	memcpy(e->name, h->name, h->len + 1);
	e->hnext = ca->buckets[hash & (ca->nbuckets - 1)];
	ca->buckets[hash & (ca->nbuckets - 1)] = e;
	sl_list_add(&ca->lru, &e->lru);
	ca->count++;
	cache_evict(ca, ca->capacity);
	/* One leaf a bucket at most; failing to grow only lengthens the chains. */
	if (ca->count > ca->nbuckets)
		resize_buckets(ca, ca->nbuckets * 2);
found:
	if (!X509_up_ref(x)) {
		err = -ENOMEM;
		goto unlock;
	}
	if (!EVP_PKEY_up_ref(ca->leaf_key)) {
		X509_free(x);
		err = -ENOMEM;
		goto unlock;
	}
	*cert = x;
	*key = ca->leaf_key;
unlock:
	pthread_mutex_unlock(&ca->lock);
	return err;
}

int sl_ca_leaf(struct sl_ca *ca, const char *name, X509 **cert, EVP_PKEY **key)
{
	struct host h;

	*cert = NULL;
	*key = NULL;
	if (parse_host(name, &h))
		return -EINVAL;
	return leaf_get(ca, &h, cert, key);
}

/* What sl_ca_use_leaf() binds to an SSL (its ex_data, freed with it): the CA and the name. */
struct bound {
	struct sl_ca *ca;
	struct host h;
};

void sl_ssl_ex_free(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int idx, long argl, void *argp)
{
	(void)parent;
	(void)ad;
	(void)idx;
	(void)argl;
	(void)argp;
	free(ptr);
}

/* What binding needs, taken once for the process (pthread_once) and read-only after: the
 * SSL ex_data index of struct bound, and the algorithms, fetched once rather than looked up
 * by name in every handshake. */
static int ssl_bound_idx = -1;
static EVP_CIPHER *ticket_cipher;
static EVP_MD *sid_md;
static pthread_once_t bound_once = PTHREAD_ONCE_INIT;

static void bound_init(void)
{
	ssl_bound_idx = SSL_get_ex_new_index(0, NULL, NULL, NULL, sl_ssl_ex_free);
	ticket_cipher = EVP_CIPHER_fetch(NULL, "AES-256-CBC", NULL);
	sid_md = EVP_MD_fetch(NULL, "SHA256", NULL);
}

static struct bound *bound_of(SSL *ssl)
{
	return ssl_bound_idx >= 0 ? SSL_get_ex_data(ssl, ssl_bound_idx) : NULL;
}

/*
 * The certificate callback (SSL_set_cert_cb()): OpenSSL asks for a certificate only when the
 * handshake will send one, so a resumed handshake installs nothing (installing a cached leaf
 * costs about 16 us, make bench's mint section, where the lookup is 0.3). The leaf alone: the
 * sandbox trusts the CA itself (it is in its trust store), and a CA sent after the leaf costs
 * every client a parse and a check per handshake (about 110 us of client CPU per connection
 * with OpenSSL 3, measured by make bench). 1, or 0 (logged) to fail the handshake.
 */
static int install_leaf(SSL *ssl, void *arg)
{
	struct bound *b = bound_of(ssl);
	EVP_PKEY *key = NULL;
	X509 *cert = NULL;
	int ok;

	(void)arg;
	if (!b || leaf_get(b->ca, &b->h, &cert, &key))
		return 0;
	ok = SSL_use_cert_and_key(ssl, cert, key, NULL, 1) == 1;
	if (!ok)
		ossl_err("installing the leaf certificate");
	X509_free(cert);
	EVP_PKEY_free(key);
	return ok;
}

int sl_ca_use_leaf(struct sl_ca *ca, SSL *ssl, const char *name)
{
	struct bound *b, *old;
	unsigned char sid[32];
	EVP_MD_CTX *md;
	int ok;

	pthread_once(&bound_once, bound_init);
	if (ssl_bound_idx < 0 || !ticket_cipher || !sid_md)
		return ossl_err("TLS session setup");
	b = malloc(sizeof(*b));
	if (!b)
		return -ENOMEM;
	if (parse_host(name, &b->h)) {
		free(b);
		return -EINVAL;
	}
	b->ca = ca;
	/* The session id context: SHA-256 of the CA's digest and the name, so that a session
	 * resumes neither in another sandbox nor for another name. */
	md = EVP_MD_CTX_new();
	ok = md && EVP_DigestInit_ex(md, sid_md, NULL) &&
	     EVP_DigestUpdate(md, ca->id, sizeof(ca->id)) &&
	     EVP_DigestUpdate(md, b->h.name, b->h.len) && EVP_DigestFinal_ex(md, sid, NULL) &&
	     SSL_set_session_id_context(ssl, sid, sizeof(sid));
	EVP_MD_CTX_free(md);
	old = bound_of(ssl);
	if (!ok || !SSL_set_ex_data(ssl, ssl_bound_idx, b)) {
		free(b);
		return ossl_err("binding the TLS session to the sandbox");
	}
	free(old);
	SSL_set_cert_cb(ssl, install_leaf, NULL);
	return 0;
}

/* Makes tk[0] a key younger than SL_CA_TICKET_ROTATE_S, keeping the one it replaces while
 * that one is younger than twice that (its tickets, a period long at most, may still be
 * alive). Caller holds the lock. 0 or -EIO. */
static int tickets_rotate(struct sl_ca *ca, time_t now)
{
	struct ticket_key *cur = &ca->tk[0];
	time_t age = now - cur->born_s;

	if (cur->born_s && age >= 0 && age < SL_CA_TICKET_ROTATE_S)
		return 0;
	if (cur->born_s && age >= 0 && age < 2 * SL_CA_TICKET_ROTATE_S)
		ca->tk[1] = *cur;
	else
		OPENSSL_cleanse(&ca->tk[1], sizeof(ca->tk[1]));
	if (RAND_bytes(cur->name, sizeof(cur->name)) != 1 ||
	    RAND_priv_bytes(cur->aes, sizeof(cur->aes)) != 1 ||
	    RAND_priv_bytes(cur->hmac, sizeof(cur->hmac)) != 1) {
		OPENSSL_cleanse(cur, sizeof(*cur));
		ERR_clear_error();
		return -EIO;
	}
	cur->born_s = now ? now : 1;
	return 0;
}

int sl_ca_ticket_cb(SSL *ssl, unsigned char key_name[16], unsigned char *iv, EVP_CIPHER_CTX *cctx,
		    EVP_MAC_CTX *hctx, int enc)
{
	struct bound *b = bound_of(ssl);
	struct sl_ca *ca = b ? b->ca : NULL;
	struct ticket_key k;
	OSSL_PARAM params[3];
	int r = 0, ok;

	if (!ca)
		return 0;
	pthread_mutex_lock(&ca->lock);
	if (!tickets_rotate(ca, ca_now(ca))) {
		if (enc || !CRYPTO_memcmp(key_name, ca->tk[0].name, sizeof(k.name)))
			r = 1;
		else if (ca->tk[1].born_s &&
			 !CRYPTO_memcmp(key_name, ca->tk[1].name, sizeof(k.name)))
			r = 2;
		if (r)
			k = ca->tk[r - 1];
	}
	pthread_mutex_unlock(&ca->lock);
	if (!r)
		return 0;
	params[0] = OSSL_PARAM_construct_octet_string(OSSL_MAC_PARAM_KEY, k.hmac, sizeof(k.hmac));
	params[1] = OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, (char *)"SHA256", 0);
	params[2] = OSSL_PARAM_construct_end();
	if (enc) {
		memcpy(key_name, k.name, sizeof(k.name));
		ok = RAND_bytes(iv, EVP_CIPHER_get_iv_length(ticket_cipher)) == 1 &&
		     EVP_EncryptInit_ex(cctx, ticket_cipher, NULL, k.aes, iv);
	} else {
		ok = EVP_DecryptInit_ex(cctx, ticket_cipher, NULL, k.aes, iv);
	}
	ok = ok && EVP_MAC_CTX_set_params(hctx, params);
	OPENSSL_cleanse(&k, sizeof(k));
	if (!ok) {
		/* No ticket, or a full handshake: resumption is an optimisation. */
		ERR_clear_error();
		return 0;
	}
	/* A ticket that opens is renewed all the same: a TLS 1.3 client uses a ticket once
	 * (RFC 8446 appendix C.4; wrk, for one, resumed every other connection without a new
	 * one, which OpenSSL sends after a resumption only when told to renew). */
	return enc ? 1 : 2;
}

int sl_ca_set_cache_capacity(struct sl_ca *ca, size_t capacity)
{
	int err;

	if (!capacity || capacity > SL_CA_CACHE_MAX)
		return -EINVAL;
	pthread_mutex_lock(&ca->lock);
	cache_evict(ca, capacity);
	err = resize_buckets(ca, ca->count); /* as many as the leaves kept: they grow with more */
	if (!err)
		ca->capacity = capacity;
	pthread_mutex_unlock(&ca->lock);
	return err;
}

void sl_ca_get_stats(struct sl_ca *ca, struct sl_ca_stats *st)
{
	pthread_mutex_lock(&ca->lock);
	st->hits = ca->hits;
	st->misses = ca->misses;
	st->evictions = ca->evictions;
	st->renewals = ca->renewals;
	st->entries = ca->count;
	st->capacity = ca->capacity;
	pthread_mutex_unlock(&ca->lock);
}

void sl_ca_set_clock(struct sl_ca *ca, time_t (*now_s)(void))
{
	pthread_mutex_lock(&ca->lock);
	ca->now_s = now_s;
	pthread_mutex_unlock(&ca->lock);
}

int sl_ca_key_pem(const struct sl_ca *ca, char **out, size_t *len)
{
	BIO *bio = BIO_new(BIO_s_secmem()); /* cleared when freed */
	char *data, *copy = NULL;
	long n;
	int err = 0;

	if (!bio || !PEM_write_bio_PrivateKey(bio, ca->key, NULL, NULL, 0, NULL, NULL)) {
		err = ossl_err("CA key encoding");
		goto cleanup;
	}
	n = BIO_get_mem_data(bio, &data);
	copy = n > 0 ? malloc((size_t)n + 1) : NULL;
	if (!copy) {
		err = -ENOMEM;
		goto cleanup;
	}
	memcpy(copy, data, (size_t)n);
	copy[n] = 0;
	*out = copy;
	*len = (size_t)n;
cleanup:
	BIO_free(bio);
	return err;
}

int sl_ca_save(const struct sl_ca *ca, const char *dir)
{
	char *key = NULL;
	size_t len = 0;
	int err;

	err = sl_ca_key_pem(ca, &key, &len);
	if (!err)
		err = sl_file_write(dir, "ca.key", key, len, 0600, SL_FILE_REPLACE);
	if (!err)
		err = sl_file_write(dir, "ca.pem", ca->pem, strlen(ca->pem), 0644, SL_FILE_REPLACE);
	if (err)
		sl_err("ca: saving the CA into %s failed: %s", dir, strerror(-err));
	if (key)
		OPENSSL_cleanse(key, len);
	free(key);
	return err;
}

/* Reads a whole small file from @fd (at most FILE_MAX_BYTES). */
static int read_fd(int fd, const struct stat *st, char **out, size_t *len)
{
	size_t off = 0;
	char *buf;

	if (st->st_size > FILE_MAX_BYTES)
		return -EFBIG;
	buf = malloc(st->st_size + 1);
	if (!buf)
		return -ENOMEM;
	while (off < (size_t)st->st_size) {
		ssize_t n = read(fd, buf + off, st->st_size - off);

		if (n == -1 && errno == EINTR)
			continue;
		if (n <= 0) {
			int err = n ? -errno : -EIO;

			OPENSSL_cleanse(buf, off);
			free(buf);
			return err;
		}
		off += n;
	}
	buf[off] = 0;
	*out = buf;
	*len = off;
	return 0;
}

/* Opens and reads @dir/@name. For the key (@secret), the file must be a regular file of the
 * caller's euid that neither group nor others may access. Logs why it refuses a file. */
static int read_ca_file(const char *dir, const char *name, int secret, char **out, size_t *len)
{
	char path[PATH_MAX];
	struct stat st;
	int fd, err = 0;

	if ((size_t)snprintf(path, sizeof(path), "%s/%s", dir, name) >= sizeof(path))
		return -ENAMETOOLONG;
	fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
	if (fd == -1) {
		err = -errno;
		if (err != -ENOENT || !secret)
			sl_err("ca: opening %s failed: %s", path, strerror(-err));
		return err;
	}
	if (fstat(fd, &st) == -1) {
		err = -errno;
		sl_err("ca: stat of %s failed: %s", path, strerror(-err));
	} else if (!S_ISREG(st.st_mode)) {
		err = -EINVAL;
		sl_err("ca: %s is not a regular file", path);
	} else if (secret && (st.st_mode & 077)) {
		err = -EPERM;
		sl_err("ca: %s is accessible by group or others (mode %04o): refusing the CA key; "
		       "chmod 600 it if it was not exposed, or remove the sandbox's CA",
		       path, (unsigned)(st.st_mode & 07777));
	} else if (secret && st.st_uid != geteuid()) {
		err = -EPERM;
		sl_err("ca: %s is owned by uid %u, not %u: refusing the CA key", path,
		       (unsigned)st.st_uid, (unsigned)geteuid());
	} else {
		err = read_fd(fd, &st, out, len);
		if (err)
			sl_err("ca: reading %s failed: %s", path, strerror(-err));
	}
	close(fd);
	return err;
}

/* Never prompts: the CA key is saved unencrypted (its protection is the file's mode). */
static int no_password(char *buf, int size, int rwflag, void *u)
{
	(void)buf;
	(void)size;
	(void)rwflag;
	(void)u;
	return -1;
}

/* Whether the key and certificate read from @key_src and @cert_src (where they came from, for
 * the log) make a usable CA; logs why not. */
static int check_loaded(const struct sl_ca *ca, const char *key_src, const char *cert_src)
{
	if (!ca->key) {
		sl_err("ca: %s holds no PEM private key", key_src);
		return -EINVAL;
	}
	if (!is_p256(ca->key)) {
		sl_err("ca: %s is not an EC P-256 key", key_src);
		return -EINVAL;
	}
	if (!ca->cert) {
		sl_err("ca: %s holds no PEM certificate", cert_src);
		return -EINVAL;
	}
	if (X509_check_private_key(ca->cert, ca->key) != 1) {
		ERR_clear_error();
		sl_err("ca: %s does not match %s", key_src, cert_src);
		return -EINVAL;
	}
	if (X509_check_ca(ca->cert) != 1) {
		sl_err("ca: %s is not a CA certificate", cert_src);
		return -EINVAL;
	}
	if (X509_cmp_current_time(X509_get0_notAfter(ca->cert)) <= 0) {
		sl_err("ca: %s has expired", cert_src);
		return -EKEYEXPIRED;
	}
	return 0;
}

/* The CA of a PEM key and certificate, checked; NULL and errno. */
static struct sl_ca *ca_from_pem(const char *key_pem, size_t key_len, const char *cert_pem,
				 size_t cert_len, const char *key_src, const char *cert_src)
{
	struct sl_ca *ca = ca_alloc();
	BIO *bio = NULL;
	int err;

	if (!ca || key_len > INT_MAX || cert_len > INT_MAX ||
	    !(bio = BIO_new_mem_buf(key_pem, (int)key_len))) {
		err = -ENOMEM;
		goto cleanup;
	}
	ca->key = PEM_read_bio_PrivateKey(bio, NULL, no_password, NULL);
	BIO_free(bio);
	bio = BIO_new_mem_buf(cert_pem, (int)cert_len);
	if (!bio) {
		err = -ENOMEM;
		goto cleanup;
	}
	ca->cert = PEM_read_bio_X509(bio, NULL, NULL, NULL);
	ERR_clear_error();
	err = check_loaded(ca, key_src, cert_src);
	if (!err)
		err = ca_prepare(ca);
cleanup:
	BIO_free(bio);
	if (err) {
		sl_ca_free(ca);
		errno = -err;
		return NULL;
	}
	return ca;
}

struct sl_ca *sl_ca_from_pem(const char *key_pem, size_t key_len, const char *cert_pem,
			     size_t cert_len, const char *src)
{
	char ksrc[PATH_MAX], csrc[PATH_MAX];

	snprintf(ksrc, sizeof(ksrc), "the CA key of %s", src);
	snprintf(csrc, sizeof(csrc), "the CA certificate of %s", src);
	return ca_from_pem(key_pem, key_len, cert_pem, cert_len, ksrc, csrc);
}

struct sl_ca *sl_ca_load(const char *dir)
{
	char *key_pem = NULL, *cert_pem = NULL, ksrc[PATH_MAX], csrc[PATH_MAX];
	size_t key_len = 0, cert_len = 0;
	struct sl_ca *ca = NULL;
	int err;

	err = read_ca_file(dir, "ca.key", 1, &key_pem, &key_len);
	if (!err)
		err = read_ca_file(dir, "ca.pem", 0, &cert_pem, &cert_len);
	if (!err) {
		snprintf(ksrc, sizeof(ksrc), "%s/ca.key", dir);
		snprintf(csrc, sizeof(csrc), "%s/ca.pem", dir);
		ca = ca_from_pem(key_pem, key_len, cert_pem, cert_len, ksrc, csrc);
		err = ca ? 0 : -errno;
	}
	if (key_pem)
		OPENSSL_cleanse(key_pem, key_len);
	free(key_pem);
	free(cert_pem);
	if (err)
		errno = -err;
	return ca;
}

/* SPDX-License-Identifier: MIT */
/*
 * The certificate authority of one sandbox: an EC P-256 CA whose certificate the sandbox
 * trusts, and the leaf certificates it mints, on the fly and cached, for the names the proxy
 * intercepts. The CA key never leaves sluiced's memory and state directory.
 *
 * Threading: every function but sl_ca_free() may be called from any thread, concurrently, on
 * the same CA (a mutex per CA guards the cache and the signing). sl_ca_free() needs all
 * other callers to be done with the CA; references it handed out stay valid after it. What
 * blocks: key generation (sl_ca_new()), the state directory's files (load and save), and a
 * leaf cache miss, which signs under the CA's lock (see sl_ca_leaf()).
 */
#ifndef SL_CA_H
#define SL_CA_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include <openssl/ssl.h>
#include <openssl/x509.h>

#define SL_CA_CACHE_DEFAULT 1024 /* leaves cached per CA */
#define SL_CA_CACHE_MAX (1u << 20)
#define SL_CA_HOST_MAX 253 /* longest name a leaf is minted for (RFC 1035 2.3.4) */
#define SL_CA_LEAF_LIFETIME_S (7 * 86400)
#define SL_CA_LEAF_RENEW_S 86400 /* cached leaves closer than this to expiry are re-minted */

struct sl_ca;

struct sl_ca_stats {
	uint64_t hits; /* leaves served from the cache */
	uint64_t misses; /* leaves minted: never seen, evicted since, or renewed */
	uint64_t evictions; /* leaves dropped to stay within the capacity */
	uint64_t renewals; /* of the misses: cached leaves replaced because of their validity */
	uint64_t entries; /* leaves in the cache now */
	uint64_t capacity;
};

/*
 * A new CA for sandbox @sandbox_name (at most 64 printable ASCII characters, shown in the CA's
 * subject): generates the CA key, its self-signed certificate (valid from an hour ago for ten
 * years) and the sandbox's leaf key. NULL and errno (EINVAL bad name, ENOMEM, EIO) on failure.
 */
struct sl_ca *sl_ca_new(const char *sandbox_name);

/*
 * Reads the CA saved in @dir (ca.key, ca.pem) and generates a new leaf key for it. Refuses a
 * key file that is not a regular file owned by the caller's euid with mode 0600 or stricter, a
 * key that is not P-256, a certificate that is not a CA, has expired or does not match the
 * key. NULL and errno on failure: ENOENT (no CA saved there; not logged), EPERM (unsafe key
 * file), EINVAL (bad content), EKEYEXPIRED, ENOMEM; every failure but ENOENT is logged.
 */
struct sl_ca *sl_ca_load(const char *dir);

/*
 * Writes the CA into the existing directory @dir: ca.key (PKCS#8 PEM, mode 0600 from its
 * creation on) and ca.pem (0644), each atomically (temporary file, fsync, rename). A crash
 * between the two renames leaves a pair that sl_ca_load() refuses as mismatched. Returns 0 or
 * -errno.
 */
int sl_ca_save(const struct sl_ca *ca, const char *dir);

/*
 * The CA key as PKCS#8 PEM, NUL-terminated, in *@out (malloc()ed; the caller clears it with
 * OPENSSL_cleanse() and frees it), its length in *@len: for a file of sluiced's own that keeps
 * the sandbox (sandbox/sb_state.c). Returns 0 or -errno.
 */
int sl_ca_key_pem(const struct sl_ca *ca, char **out, size_t *len);

/*
 * The CA of a PEM key and certificate kept elsewhere (@src names where, for the log), checked
 * as sl_ca_load() checks its files (P-256, matching, a CA, not expired), with a new leaf key.
 * NULL and errno (EINVAL, EKEYEXPIRED, ENOMEM); every failure is logged.
 */
struct sl_ca *sl_ca_from_pem(const char *key_pem, size_t key_len, const char *cert_pem,
			     size_t cert_len, const char *src);

/* Frees the CA and its cache. Certificates and keys handed out keep their own references.
 * Accepts NULL. */
void sl_ca_free(struct sl_ca *ca);

/* The CA certificate, borrowed: valid until sl_ca_free(). */
X509 *sl_ca_cert(const struct sl_ca *ca);

/* The CA certificate as PEM, NUL-terminated, for `sluice ca NAME`. The caller frees it with
 * free(). NULL and errno (ENOMEM) on failure. */
char *sl_ca_cert_pem(const struct sl_ca *ca);

/*
 * The leaf certificate for @name (a host name, or an IPv4/IPv6 literal), from the cache or
 * minted now, and the sandbox's leaf key. Names are case-insensitive; NULL, a trailing dot,
 * empty labels, characters outside [A-Za-z0-9_-] and names longer than SL_CA_HOST_MAX are
 * refused. On success *@cert and *@key are new references that the caller releases with
 * X509_free() and EVP_PKEY_free(); they stay valid after an eviction or sl_ca_free(). Never
 * generates a key. A miss signs while holding the CA's lock (about 33 us), so other callers
 * of the same CA wait that long. Returns 0, -EINVAL (bad name, not logged), -ENOMEM or -EIO
 * (logged).
 */
int sl_ca_leaf(struct sl_ca *ca, const char *name, X509 **cert, EVP_PKEY **key);

/*
 * Makes @ssl (a server-side SSL, before its handshake or in its SNI callback) present the
 * leaf for @name alone, and binds it to the CA and @name for session tickets (see
 * sl_ca_ticket_cb()). The leaf is taken from the cache (or minted) and installed when the
 * handshake asks for a certificate (SSL_set_cert_cb(); a resumed handshake never does): a
 * failure then fails the handshake, logged. The CA must outlive @ssl's handshake. Returns 0,
 * -EINVAL (bad name), -ENOMEM or -EIO.
 */
int sl_ca_use_leaf(struct sl_ca *ca, SSL *ssl, const char *name);
/* The free callback of SSL ex_data that is one malloc()ed block (SSL_get_ex_new_index()):
 * the CA's binding here, the handshake watch of tls.c. */
void sl_ssl_ex_free(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int idx, long argl, void *argp);

/*
 * Session resumption towards the sandbox: stateless tickets (RFC 5077; RFC 8446 section
 * 4.6.1) sealed with keys of this CA's sandbox alone. The keys are random, made in memory
 * when first needed, never saved and never logged; a new one seals from every
 * SL_CA_TICKET_ROTATE_S on, and the one before it still opens tickets until the next
 * rotation (a ticket lives SL_CA_TICKET_ROTATE_S at most: sl_tls_server_ctx()).
 * sl_ca_use_leaf() binds the SSL to the CA (whose keys sl_ca_ticket_cb() then uses) and to
 * the name: its session id context is a digest of the CA and the name, so a session
 * resumes only in the sandbox and for the name it was made for; anything else gets a full
 * handshake.
 */
#define SL_CA_TICKET_ROTATE_S 3600

/* The SSL_CTX's ticket key callback (SSL_CTX_set_tlsext_ticket_key_evp_cb()), for SSLs set
 * up by sl_ca_use_leaf(): seals with the sandbox's current key (1); opens with it or with
 * the previous one (2: the client gets a new ticket under the current key, as it does after
 * every resumption); 0 for a ticket of no key of this sandbox (another sandbox's, or older
 * than the previous key: a full handshake) and for an SSL without a CA. */
int sl_ca_ticket_cb(SSL *ssl, unsigned char key_name[16], unsigned char *iv, EVP_CIPHER_CTX *cctx,
		    EVP_MAC_CTX *hctx, int enc);

/* Whether @name is a name sl_ca_leaf() accepts (a proxy may check it before anything else). */
int sl_ca_name_ok(const char *name);

/* Sets the cache capacity (1..SL_CA_CACHE_MAX), evicting the least recently used leaves
 * beyond it. Returns 0 or -EINVAL/-ENOMEM. */
int sl_ca_set_cache_capacity(struct sl_ca *ca, size_t capacity);

void sl_ca_get_stats(struct sl_ca *ca, struct sl_ca_stats *st);

/* Tests only: the wall clock that leaf validity is computed from (NULL: time()). */
void sl_ca_set_clock(struct sl_ca *ca, time_t (*now_s)(void));

#endif

// SPDX-License-Identifier: MIT
/*
 * The trust files of a `sluice run` command: every TLS client it may start must trust the
 * sandbox's CA (intercepted hosts) AND the system's CAs (hosts the policy passes through), and
 * each ecosystem reads its trust store from a variable of its own. npm's `cafile` and pip
 * replace the system store rather than add to it, so every variable that names a file names a
 * combined bundle; only NODE_EXTRA_CA_CERTS (which Node adds to its own store) names the
 * sandbox CA alone. Java reads neither PEM nor a variable of its own: it gets a PKCS12
 * truststore through JAVA_TOOL_OPTIONS, written with OpenSSL's API (no keytool needed), when a
 * Java is there to read it.
 *
 * Everything lands in one directory made for the run (0755, files 0644: certificates are
 * public, and the command may run as another user), removed when the run ends.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/pkcs12.h>
#include <openssl/x509.h>

#include "cli.h"

/* The password of the PKCS12 truststore. A truststore holds public certificates only; Java
 * wants a password to check the file's integrity, and "changeit" is the one every Java user
 * expects (the JDK's own cacerts). */
#define P12_PASS "changeit"
/* The attribute that makes a PKCS12 certificate bag a trusted entry for Java
 * (sun.security.pkcs12: "ORACLE_TrustedKeyUsage"); OpenSSL ≥ 3.2 calls it
 * NID_oracle_jdk_trustedkeyusage (`openssl pkcs12 -jdktrust`). Its value: the key usages
 * trusted, anyExtendedKeyUsage for all. */
#define OID_JDK_TRUST "2.16.840.1.113894.746875.1.1"
#define OID_ANY_EKU "2.5.29.37.0"

/* The system trust store, first one found: Debian/Ubuntu/Alpine, Fedora/RHEL, others. */
static const char *const system_bundles[] = {
	"/etc/ssl/certs/ca-certificates.crt",
	"/etc/pki/tls/certs/ca-bundle.crt",
	"/etc/ssl/cert.pem",
};
static const char *const system_dirs[] = { "/etc/ssl/certs", "/etc/pki/tls/certs" };

static int write_file(const char *path, const void *data, size_t len)
{
	const char *p = data;
	int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644), e = 0;

	if (fd == -1)
		return -errno;
	while (len) {
		ssize_t w = write(fd, p, len);

		if (w == -1 && errno == EINTR)
			continue;
		if (w == -1) {
			e = -errno;
			break;
		}
		p += w;
		len -= w;
	}
	if (close(fd) == -1 && !e)
		e = -errno;
	if (e)
		unlink(path);
	return e;
}

static void append_system_bundle(struct sl_buf *b)
{
	for (size_t i = 0; i < sizeof(system_bundles) / sizeof(system_bundles[0]); i++) {
		char chunk[65536];
		size_t n;
		FILE *f = fopen(system_bundles[i], "re");

		if (!f)
			continue;
		while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0)
			sl_buf_append(b, chunk, n);
		fclose(f);
		if (sl_buf_size(b) && sl_buf_head(b)[sl_buf_size(b) - 1] != '\n')
			sl_buf_append(b, "\n", 1);
		return;
	}
}

/* Whether a `java` is there for the command to run: $JAVA_HOME/bin/java or one on PATH. */
static int have_java(void)
{
	const char *home = getenv("JAVA_HOME"), *path = getenv("PATH");
	char exe[PATH_MAX];

	if (home && *home && snprintf(exe, sizeof(exe), "%s/bin/java", home) < (int)sizeof(exe) &&
	    access(exe, X_OK) == 0)
		return 1;
	for (const char *p = path ? path : "/usr/local/bin:/usr/bin:/bin"; *p;) {
		size_t n = strcspn(p, ":");

		if (n && (int)n < (int)sizeof(exe) - 6) {
			snprintf(exe, sizeof(exe), "%.*s/java", (int)n, p);
			if (access(exe, X_OK) == 0)
				return 1;
		}
		p += n;
		if (*p)
			p++;
	}
	return 0;
}

/* One trusted-certificate bag: the certificate, an alias (Java lists entries by it) and the
 * attribute that makes Java trust it. Returns 0 or -ENOMEM. */
static int add_trusted(STACK_OF(PKCS12_SAFEBAG) * *bags, X509 *x, int idx, ASN1_OBJECT *any_eku)
{
	PKCS12_SAFEBAG *bag = PKCS12_add_cert(bags, x);
	char alias[32];

	if (!bag)
		return -ENOMEM;
	/* The sandbox CA comes first: its alias says what it is. */
	if (idx == 0)
		snprintf(alias, sizeof(alias), "sluice-sandbox-ca");
	else
		snprintf(alias, sizeof(alias), "system-ca-%d", idx);
	if (!PKCS12_add_friendlyname_asc(bag, alias, -1) ||
	    !PKCS12_add1_attr_by_txt(bag, OID_JDK_TRUST, V_ASN1_OBJECT,
				     (const unsigned char *)any_eku, -1))
		return -ENOMEM;
	return 0;
}

/*
 * Writes @path: a PKCS12 truststore (password P12_PASS) with the sandbox CA @ca_pem and every
 * certificate of the PEM bundle @bundle. Certificate bags are not encrypted (they are public)
 * and the MAC is HMAC-SHA256, which every supported JDK (8u301+, 11.0.12+, 17) reads.
 * Returns 0 or -errno.
 */
static int write_p12(const char *path, const char *ca_pem, size_t ca_len,
		     const struct sl_buf *bundle)
{
	STACK_OF(PKCS12_SAFEBAG) *bags = NULL;
	STACK_OF(PKCS7) *safes = NULL;
	ASN1_OBJECT *any_eku = OBJ_txt2obj(OID_ANY_EKU, 1);
	unsigned char *der = NULL;
	PKCS12 *p12 = NULL;
	BIO *in = NULL;
	X509 *x = NULL;
	int e = -ENOMEM, n = 0, len;

	if (!any_eku)
		goto out;
	in = BIO_new_mem_buf(ca_pem, (int)ca_len);
	x = in ? PEM_read_bio_X509(in, NULL, NULL, NULL) : NULL;
	if (!x) {
		e = -EINVAL;
		goto out;
	}
	if (add_trusted(&bags, x, n++, any_eku))
		goto out;
	X509_free(x);
	x = NULL;
	BIO_free(in);
	in = BIO_new_mem_buf(sl_buf_head(bundle), (int)sl_buf_size(bundle));
	while (in && (x = PEM_read_bio_X509(in, NULL, NULL, NULL))) {
		if (add_trusted(&bags, x, n++, any_eku))
			goto out;
		X509_free(x);
		x = NULL;
	}
	ERR_clear_error(); /* the end of the bundle reads as an error */
	if (!PKCS12_add_safe(&safes, bags, -1, 0, NULL))
		goto out;
	p12 = PKCS12_add_safes(safes, 0);
	if (!p12 || !PKCS12_set_mac(p12, P12_PASS, -1, NULL, 0, PKCS12_DEFAULT_ITER, EVP_sha256()))
		goto out;
	len = i2d_PKCS12(p12, &der);
	if (len <= 0)
		goto out;
	e = write_file(path, der, (size_t)len);
out:
	OPENSSL_free(der);
	PKCS12_free(p12);
	sk_PKCS7_pop_free(safes, PKCS7_free);
	sk_PKCS12_SAFEBAG_pop_free(bags, PKCS12_SAFEBAG_free);
	X509_free(x);
	BIO_free(in);
	ASN1_OBJECT_free(any_eku);
	return e;
}

/* SSL_CERT_DIR: a directory in OpenSSL's hashed layout (SUBJECTHASH.0) with the sandbox CA,
 * followed by the system's directory, so that clients reading only the directory (and Go,
 * which reads every file of each) find both. Returns 0 or -errno. */
static int write_cert_dir(struct sl_run_trust *t, const char *ca_pem, size_t ca_len)
{
	BIO *in = BIO_new_mem_buf(ca_pem, (int)ca_len);
	X509 *x = in ? PEM_read_bio_X509(in, NULL, NULL, NULL) : NULL;
	size_t n;
	int e;

	if (!x) {
		e = -EINVAL;
		goto out;
	}
	snprintf(t->certdir, sizeof(t->certdir), "%s/certs", t->dir);
	snprintf(t->hashed, sizeof(t->hashed), "%s/%08lx.0", t->certdir, X509_subject_name_hash(x));
	if (mkdir(t->certdir, 0755) == -1 || chmod(t->certdir, 0755) == -1) {
		e = -errno;
		t->certdir[0] = 0;
		goto out;
	}
	e = write_file(t->hashed, ca_pem, ca_len);
	if (e) {
		t->hashed[0] = 0;
		goto out;
	}
	n = strlen(t->certdir);
	snprintf(t->certpath, sizeof(t->certpath), "%s", t->certdir);
	for (size_t i = 0; i < sizeof(system_dirs) / sizeof(system_dirs[0]); i++) {
		struct stat st;

		if (stat(system_dirs[i], &st) == 0 && S_ISDIR(st.st_mode)) {
			snprintf(t->certpath + n, sizeof(t->certpath) - n, ":%s", system_dirs[i]);
			break;
		}
	}
out:
	X509_free(x);
	BIO_free(in);
	return e;
}

int sl_run_trust_write(struct sl_run_trust *t, const char *ca_pem, size_t ca_len, char *err,
		       size_t errlen)
{
	const char *tmp = getenv("TMPDIR");
	struct sl_buf sys = { 0 }, bundle = { 0 };
	int e;

	memset(t, 0, sizeof(*t));
	snprintf(t->dir, sizeof(t->dir), "%s/sluice-run-XXXXXX", tmp && *tmp == '/' ? tmp : "/tmp");
	if (!mkdtemp(t->dir) || chmod(t->dir, 0755) == -1) {
		e = -errno;
		snprintf(err, errlen, "making a directory for the CA in %s failed: %s", t->dir,
			 strerror(-e));
		if (e != -ENOENT)
			rmdir(t->dir);
		t->dir[0] = 0;
		goto out;
	}
	snprintf(t->ca, sizeof(t->ca), "%s/ca.pem", t->dir);
	snprintf(t->bundle, sizeof(t->bundle), "%s/bundle.pem", t->dir);
	append_system_bundle(&sys);
	sl_buf_append(&bundle, sl_buf_head(&sys), sl_buf_size(&sys));
	sl_buf_append(&bundle, ca_pem, ca_len);
	e = write_file(t->ca, ca_pem, ca_len);
	if (e) {
		t->ca[0] = 0;
		goto fail;
	}
	e = write_file(t->bundle, sl_buf_head(&bundle), sl_buf_size(&bundle));
	if (e) {
		t->bundle[0] = 0;
		goto fail;
	}
	e = write_cert_dir(t, ca_pem, ca_len);
	if (e)
		goto fail;
	/* JAVA_TOOL_OPTIONS is split at whitespace: a path with a blank cannot go there. */
	if (have_java() && !strpbrk(t->dir, " \t\n")) {
		snprintf(t->p12, sizeof(t->p12), "%s/truststore.p12", t->dir);
		e = write_p12(t->p12, ca_pem, ca_len, &sys);
		if (e) {
			t->p12[0] = 0;
			goto fail;
		}
	}
	goto out;
fail:
	snprintf(err, errlen, "writing the CA into %s failed: %s", t->dir, strerror(-e));
out:
	sl_buf_free(&sys);
	sl_buf_free(&bundle);
	return e;
}

/* The variables that name a trust file, and which file: the combined bundle unless said. */
static const char *const bundle_vars[] = {
	"SSL_CERT_FILE", /* OpenSSL and what links it: curl, wget, Python's ssl, Ruby, Go */
	"CURL_CA_BUNDLE", /* curl; also pip and requests, after REQUESTS_CA_BUNDLE */
	"REQUESTS_CA_BUNDLE", /* Python requests (and pip's vendored copy) */
	"PIP_CERT", /* pip's --cert: replaces its store (certifi) */
	"npm_config_cafile", /* npm's cafile: replaces Node's store, wins over any npmrc */
	"GIT_SSL_CAINFO", /* git over https */
	"AWS_CA_BUNDLE", /* AWS CLI and SDKs */
	"CARGO_HTTP_CAINFO", /* cargo */
	"DENO_CERT", /* deno */
	"BUNDLE_SSL_CA_CERT", /* Ruby's bundler */
	"GRPC_DEFAULT_SSL_ROOTS_FILE_PATH", /* gRPC's C core (Python, Ruby, PHP, C++) */
	"NIX_SSL_CERT_FILE", /* Nix */
	"HTTPLIB2_CA_CERTS", /* httplib2 (Google's Python API clients) */
	"CLOUDSDK_CORE_CUSTOM_CA_CERTS_FILE", /* gcloud */
};

int sl_run_trust_env(const struct sl_run_trust *t)
{
	for (size_t i = 0; i < sizeof(bundle_vars) / sizeof(bundle_vars[0]); i++)
		if (setenv(bundle_vars[i], t->bundle, 1))
			return -errno;
	/* Node adds this file to its own store (replaced only by npm's cafile, above). */
	if (setenv("NODE_EXTRA_CA_CERTS", t->ca, 1) || setenv("SSL_CERT_DIR", t->certpath, 1))
		return -errno;
	if (t->p12[0]) {
		const char *old = getenv("JAVA_TOOL_OPTIONS");
		char opts[2 * PATH_MAX + 512];

		snprintf(opts, sizeof(opts),
			 "%s%s-Djavax.net.ssl.trustStore=%s -Djavax.net.ssl.trustStoreType=PKCS12 "
			 "-Djavax.net.ssl.trustStorePassword=" P12_PASS,
			 old ? old : "", old && *old ? " " : "", t->p12);
		if (setenv("JAVA_TOOL_OPTIONS", opts, 1))
			return -errno;
	}
	return 0;
}

void sl_run_trust_remove(struct sl_run_trust *t)
{
	const char *files[] = { t->ca, t->bundle, t->hashed, t->p12 };

	if (!t->dir[0])
		return;
	for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++)
		if (files[i][0])
			unlink(files[i]);
	if (t->certdir[0])
		rmdir(t->certdir);
	rmdir(t->dir);
	t->dir[0] = 0;
}

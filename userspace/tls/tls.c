// SPDX-License-Identifier: MIT
/*
 * TLS for the intercepting proxy, both legs, with OpenSSL 3. The client leg presents a leaf
 * minted by the sandbox's own CA (ca.c); the upstream leg verifies the real server's chain
 * and name, so interception never turns into a silent downgrade. Both legs offer ALPN h2 and
 * http/1.1: the proxy speaks HTTP/2 towards the sandbox (px_h2.c) and the upstream
 * (px_h2_up.c), and parses every request either way.
 * Streams are non-blocking: OpenSSL's WANT_READ/WANT_WRITE become loop events.
 */
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/x509v3.h>

#include "core/loop.h"
#include "tls/ca.h"
#include "tls/tls.h"

static const unsigned char alpn_upstream[] = "\x02h2\x08http/1.1";
static const unsigned char alpn_sandbox[] = "\x02h2\x08http/1.1";

/* ALPN on the client leg: h2 when offered (the proxy speaks it, px_h2.c), else http/1.1. A
 * client that offers neither cannot be served and is told so (RFC 7301 section 3.2). */
static int select_alpn(SSL *ssl, const unsigned char **out, unsigned char *outlen,
		       const unsigned char *in, unsigned inlen, void *arg)
{
	(void)ssl;
	(void)arg;
	if (SSL_select_next_proto((unsigned char **)out, outlen, alpn_sandbox,
				  sizeof(alpn_sandbox) - 1, in, inlen) == OPENSSL_NPN_NEGOTIATED)
		return SSL_TLSEXT_ERR_OK;
	return SSL_TLSEXT_ERR_ALERT_FATAL;
}

static void set_err(char *err, size_t errlen, const char *what)
{
	char why[256];

	snprintf(err, errlen, "%s: %s", what, sl_tls_error(why, sizeof(why)));
}

SSL_CTX *sl_tls_server_ctx(char *err, size_t errlen)
{
	SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());

	if (!ctx) {
		set_err(err, errlen, "creating the TLS server context failed");
		return NULL;
	}
	SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
	/* TLS 1.2 towards the sandbox: forward-secret AEAD suites only (ECDHE with GCM or
	 * ChaCha20-Poly1305), what Mozilla's "intermediate" profile keeps. CBC suites (Lucky
	 * 13, padding oracles) and static-RSA key exchange are never offered; TLS 1.3's suites
	 * are all AEAD already. The leaves are ECDSA (ca.c). */
	if (SSL_CTX_set_cipher_list(ctx, "ECDHE+AESGCM:ECDHE+CHACHA20:!aNULL:!eNULL") != 1) {
		set_err(err, errlen, "setting the TLS 1.2 cipher suites failed");
		SSL_CTX_free(ctx);
		return NULL;
	}
	SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION |
					 SSL_OP_CIPHER_SERVER_PREFERENCE);
	/* Resumption with stateless tickets only, sealed with the keys of the connection's
	 * sandbox (ca.c): no session cache to hold or share between sandboxes. A resumed
	 * handshake skips the certificate and its signature, about half the CPU of a new
	 * connection. One ticket per handshake (a client resumes one connection with it;
	 * OpenSSL's default is two), valid as long as a key seals (the previous key still
	 * opens it after a rotation). TLS 1.3 would send it after the handshake, alone, the
	 * moment the client's Finished arrives; asked for at the first write instead
	 * (sl_stream_accepted()), it leaves with the first answer. */
	SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
	SSL_CTX_set_num_tickets(ctx, 0);
	SSL_CTX_set_timeout(ctx, SL_CA_TICKET_ROTATE_S);
	SSL_CTX_set_tlsext_ticket_key_evp_cb(ctx, sl_ca_ticket_cb);
	SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER |
				      SSL_MODE_RELEASE_BUFFERS);
	SSL_CTX_set_alpn_select_cb(ctx, select_alpn, NULL);
	/* Read whole bursts, not a record header then its body: half the read() calls. */
	SSL_CTX_set_read_ahead(ctx, 1);
	return ctx;
}

void sl_tls_ticket(SSL *ssl)
{
	if (SSL_version(ssl) == TLS1_3_VERSION)
		SSL_new_session_ticket(ssl);
}

/* SSL ex_data indexes, each taken once for the process (pthread_once), read-only after: -1
 * if OpenSSL had none to give. */
static int nosan_idx = -1; /* the leaf that failed its name has no SAN */
static pthread_once_t nosan_once = PTHREAD_ONCE_INIT;

static void nosan_init(void)
{
	nosan_idx = SSL_get_ex_new_index(0, NULL, NULL, NULL, NULL);
}

/* Notes why a leaf failed its name check, while the certificate is at hand (a failed
 * handshake keeps no peer certificate). */
static int upstream_verify(int ok, X509_STORE_CTX *st)
{
	SSL *ssl = X509_STORE_CTX_get_ex_data(st, SSL_get_ex_data_X509_STORE_CTX_idx());
	X509 *cert = X509_STORE_CTX_get_current_cert(st);

	if (!ok && ssl && cert && nosan_idx >= 0 &&
	    X509_STORE_CTX_get_error(st) == X509_V_ERR_HOSTNAME_MISMATCH &&
	    X509_get_ext_by_NID(cert, NID_subject_alt_name, -1) < 0)
		SSL_set_ex_data(ssl, nosan_idx, (void *)1);
	return ok;
}

SSL_CTX *sl_tls_client_ctx(const char *ca_file, char *err, size_t errlen)
{
	SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());

	if (!ctx) {
		set_err(err, errlen, "creating the TLS client context failed");
		return NULL;
	}
	SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
	SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION);
	SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER |
				      SSL_MODE_RELEASE_BUFFERS);
	pthread_once(&nosan_once, nosan_init);
	SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, upstream_verify);
	if (ca_file ? SSL_CTX_load_verify_locations(ctx, ca_file, NULL) != 1 :
		      SSL_CTX_set_default_verify_paths(ctx) != 1) {
		char what[300];

		snprintf(what, sizeof(what), "loading trust anchors from %s failed",
			 ca_file ? ca_file : "the system store");
		set_err(err, errlen, what);
		SSL_CTX_free(ctx);
		return NULL;
	}
	SSL_CTX_set_alpn_protos(ctx, alpn_upstream, sizeof(alpn_upstream) - 1);
	SSL_CTX_set_read_ahead(ctx, 1);
	return ctx;
}

int sl_tls_set_upstream_name(SSL *ssl, const char *name)
{
	SSL_set_hostflags(ssl, X509_CHECK_FLAG_NEVER_CHECK_SUBJECT |
				       X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
	if (!SSL_set_tlsext_host_name(ssl, name) || !SSL_set1_host(ssl, name))
		return -ENOMEM;
	return 0;
}

void sl_tls_upstream_why(SSL *ssl, const char *name, char *buf, size_t len)
{
	long v = SSL_get_verify_result(ssl);
	char err[256];

	if (v == X509_V_OK) {
		snprintf(buf, len, "upstream TLS handshake with %s failed: %s", name,
			 sl_tls_error(err, sizeof(err)));
		return;
	}
	if (v == X509_V_ERR_HOSTNAME_MISMATCH && nosan_idx >= 0 &&
	    SSL_get_ex_data(ssl, nosan_idx)) {
		snprintf(buf, len,
			 "upstream certificate verification failed for %s: hostname mismatch (the "
			 "certificate has no subjectAltName; a name only in the subject CN is "
			 "refused)",
			 name);
		return;
	}
	snprintf(buf, len, "upstream certificate verification failed for %s: %s", name,
		 X509_verify_cert_error_string(v));
}

/* What a watched client handshake went through (SSL ex_data). */
struct watch {
	int alert; /* the fatal alert the client sent, -1 for none */
	int cert_sent; /* our Certificate message went out */
};

static int watch_idx = -1; /* taken once, like nosan_idx */
static pthread_once_t watch_once = PTHREAD_ONCE_INIT;

static void watch_msg(int write_p, int version, int content_type, const void *buf, size_t len,
		      SSL *ssl, void *arg)
{
	struct watch *w = SSL_get_ex_data(ssl, watch_idx);
	const unsigned char *b = buf;

	(void)version;
	(void)arg;
	if (!w || !len)
		return;
	if (!write_p && content_type == SSL3_RT_ALERT && len >= 2 && b[0] == SSL3_AL_FATAL)
		w->alert = b[1];
	else if (write_p && content_type == SSL3_RT_HANDSHAKE && b[0] == SSL3_MT_CERTIFICATE)
		w->cert_sent = 1;
}

static void watch_init(void)
{
	watch_idx = SSL_get_ex_new_index(0, NULL, NULL, NULL, sl_ssl_ex_free);
}

void sl_tls_watch_client(SSL *ssl)
{
	struct watch *w;

	pthread_once(&watch_once, watch_init);
	if (watch_idx < 0 || !(w = calloc(1, sizeof(*w))))
		return;
	w->alert = -1;
	if (!SSL_set_ex_data(ssl, watch_idx, w)) {
		free(w);
		return;
	}
	SSL_set_msg_callback(ssl, watch_msg);
}

int sl_tls_client_distrust(SSL *ssl)
{
	struct watch *w = watch_idx < 0 ? NULL : SSL_get_ex_data(ssl, watch_idx);

	if (!w)
		return 0;
	/* RFC 8446 section 6.2: unknown_ca (48), bad_certificate (42), certificate_unknown
	 * (46); clients that fail verification send one of these, or just close (some
	 * runtimes, after the whole server flight arrived). */
	if (w->alert == SSL3_AD_BAD_CERTIFICATE || w->alert == SSL3_AD_CERTIFICATE_UNKNOWN ||
	    w->alert == TLS1_AD_UNKNOWN_CA)
		return 1;
	return w->alert < 0 && w->cert_sent;
}

const char *sl_tls_error(char *buf, size_t len)
{
	unsigned long e = ERR_peek_last_error();

	if (!e) {
		snprintf(buf, len, "%s", errno ? strerror(errno) : "connection closed");
		return buf;
	}
	ERR_error_string_n(e, buf, len);
	ERR_clear_error();
	return buf;
}

void sl_stream_init(struct sl_stream *s)
{
	memset(s, 0, sizeof(*s));
	s->fd = -1;
}

void sl_stream_close(struct sl_stream *s)
{
	SSL_free(s->ssl);
	if (s->fd >= 0)
		close(s->fd);
	sl_buf_free(&s->in);
	sl_buf_free(&s->out);
	sl_stream_init(s);
}

size_t sl_stream_read(struct sl_stream *s, size_t limit)
{
	char buf[16384];
	size_t total = 0;

	if (!s->readable && !(s->ssl && SSL_has_pending(s->ssl)))
		return 0;
	s->ssl_wants_write = 0;
	while (!s->eof && !s->err && sl_buf_size(&s->in) < limit) {
		size_t want = limit - sl_buf_size(&s->in), n = 0;

		if (want > sizeof(buf))
			want = sizeof(buf);
		if (s->ssl) {
			int r;

			ERR_clear_error();
			r = SSL_read_ex(s->ssl, buf, want, &n);
			if (!r) {
				int e = SSL_get_error(s->ssl, 0);

				if (e == SSL_ERROR_WANT_READ) {
					s->readable = 0;
					break;
				}
				if (e == SSL_ERROR_WANT_WRITE) {
					s->ssl_wants_write = 1;
					break;
				}
				if (e == SSL_ERROR_ZERO_RETURN)
					s->eof = 1;
				else if (e == SSL_ERROR_SYSCALL && !ERR_peek_error())
					s->eof = 1; /* EOF without close_notify: treat as end */
				else
					s->err = 1;
				break;
			}
		} else {
			ssize_t r = recv(s->fd, buf, want, MSG_DONTWAIT);

			if (r == -1 && errno == EINTR)
				continue;
			if (r == -1 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
				s->readable = 0;
				break;
			}
			if (r == -1) {
				s->err = 1;
				break;
			}
			if (r == 0) {
				s->eof = 1;
				break;
			}
			n = r;
		}
		if (sl_buf_append(&s->in, buf, n)) {
			s->err = 1;
			break;
		}
		total += n;
		/* A short read drained the socket (and OpenSSL's buffer): the loop is level
		 * triggered and wakes us for more, so skip the read that would say EAGAIN. */
		if (n < want && (!s->ssl || !SSL_has_pending(s->ssl))) {
			s->readable = 0;
			break;
		}
	}
	s->rx += total;
	return total;
}

void sl_stream_accepted(struct sl_stream *s)
{
	s->ticket_owed = s->ssl != NULL; /* TLS 1.3 or not: sl_tls_ticket() */
}

size_t sl_stream_flush(struct sl_stream *s)
{
	size_t total = 0;

	s->ssl_wants_read = 0;
	while (!s->err && sl_buf_size(&s->out)) {
		size_t n = 0;

		if (s->ssl) {
			if (s->ticket_owed) {
				/* Asked for here, not when the handshake ended: OpenSSL sends
				 * it at the next SSL_read() or SSL_write(), and the pump reads
				 * the request before it answers. */
				s->ticket_owed = 0;
				sl_tls_ticket(s->ssl);
			}
			ERR_clear_error();
			if (!SSL_write_ex(s->ssl, sl_buf_head(&s->out), sl_buf_size(&s->out), &n)) {
				int e = SSL_get_error(s->ssl, 0);

				if (e == SSL_ERROR_WANT_WRITE)
					break;
				if (e == SSL_ERROR_WANT_READ) {
					s->ssl_wants_read = 1;
					break;
				}
				s->err = 1;
				break;
			}
		} else {
			ssize_t r = send(s->fd, sl_buf_head(&s->out), sl_buf_size(&s->out),
					 MSG_DONTWAIT | MSG_NOSIGNAL);

			if (r == -1 && errno == EINTR)
				continue;
			if (r == -1 && (errno == EAGAIN || errno == EWOULDBLOCK))
				break;
			if (r == -1) {
				s->err = 1;
				break;
			}
			n = r;
		}
		sl_buf_consume(&s->out, n);
		total += n;
		if (sl_buf_size(&s->out))
			break; /* a partial write: the socket is full, wait for writable */
	}
	s->tx += total;
	return total;
}

void sl_stream_cork(struct sl_stream *s)
{
	int one = 1;

	/* tcp_send_fin() pushes what is queued, corked or not. */
	if (s->fd >= 0)
		setsockopt(s->fd, IPPROTO_TCP, TCP_CORK, &one, sizeof(one));
}

void sl_stream_close_notify(struct sl_stream *s)
{
	if (s->shut || s->err || sl_buf_size(&s->out) || !s->ssl)
		return;
	ERR_clear_error();
	SSL_shutdown(s->ssl);
}

void sl_stream_shutdown(struct sl_stream *s)
{
	if (s->shut || s->err || sl_buf_size(&s->out))
		return;
	sl_stream_close_notify(s);
	shutdown(s->fd, SHUT_WR);
	s->shut = 1;
}

unsigned sl_stream_events(const struct sl_stream *s, int want_read)
{
	unsigned ev = 0;

	if (want_read || s->ssl_wants_read)
		ev |= SL_READ;
	if (sl_buf_size(&s->out) || s->ssl_wants_write)
		ev |= SL_WRITE;
	return ev;
}

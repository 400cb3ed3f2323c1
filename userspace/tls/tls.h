/* SPDX-License-Identifier: MIT */
/*
 * TLS for the proxy: contexts for both legs and non-blocking streams (see tls.c).
 *
 * Threading: contexts are made at startup (the client one reads the CA bundle from disk) and
 * then shared read-only, as OpenSSL allows from any thread; a stream and its SSL belong to
 * the thread of their connection (its proxy's loop: a worker's). Stream calls never block.
 */
#ifndef SL_TLS_H
#define SL_TLS_H

#include <stddef.h>

#include <openssl/ssl.h>

#include "core/buf.h"

/* The client-facing context: TLS 1.2+, ALPN h2 or http/1.1 (a client offering ALPN with
 * neither gets no_application_protocol), certificates set per connection from the sandbox CA. */
SSL_CTX *sl_tls_server_ctx(char *err, size_t errlen);
/* Asks for a TLS 1.3 session ticket on @ssl, a connection of that context whose handshake
 * completed: OpenSSL sends it ahead of the next record written (a TLS 1.2 ticket is part of
 * the handshake). That context issues none by itself: see sl_stream_accepted(). */
void sl_tls_ticket(SSL *ssl);
/* The upstream context: TLS 1.2+, peer verified against @ca_file (NULL: the system store),
 * ALPN h2 and http/1.1 (px_h2_up.c speaks h2 when the upstream picks it). */
SSL_CTX *sl_tls_client_ctx(const char *ca_file, char *err, size_t errlen);

/*
 * One side of a proxied connection: a socket, maybe with TLS, and its two buffers. Reads fill
 * @in up to a bound, writes drain @out; SSL's want-read/want-write are folded into the events
 * the stream needs (sl_stream_events()).
 */
struct sl_stream {
	int fd;
	SSL *ssl; /* NULL: plain TCP */
	struct sl_buf in, out;
	int eof; /* the peer finished sending */
	int err; /* a fatal error: the connection is over */
	int ssl_wants_write; /* a read needs the socket writable */
	int ssl_wants_read; /* a write needs the socket readable */
	int shut; /* we sent our close_notify / FIN */
	int readable; /* the loop said so and no read has drained it since */
	int ticket_owed; /* a session ticket goes ahead of the first write (sl_stream_accepted()) */
	unsigned long long rx, tx; /* bytes of plaintext moved */
};

void sl_stream_init(struct sl_stream *s);
/* Closes the socket, frees the SSL and the buffers. */
void sl_stream_close(struct sl_stream *s);
/* Reads while @in holds less than @limit bytes, if the socket is @readable or OpenSSL holds
 * unread bytes: no read() is spent to learn that there is nothing. Returns bytes read. */
size_t sl_stream_read(struct sl_stream *s, size_t limit);
/* The server handshake of @s completed: its session ticket (TLS 1.3) is written with the
 * first answer, in the same flush, rather than alone the moment the client's Finished
 * arrived: a segment and a wake-up of the client fewer per connection. */
void sl_stream_accepted(struct sl_stream *s);
/* Writes what it can of @out. Returns bytes written. */
size_t sl_stream_flush(struct sl_stream *s);
/* Nothing but close() follows what @s still writes (the rest of an answer, close_notify):
 * held back (TCP_CORK) until close() sends the FIN, which pushes it all in one segment, one
 * wake-up of the peer instead of three. A socket only (not an HTTP/2 stream); best effort. */
void sl_stream_cork(struct sl_stream *s);
/* Ends our direction once @out is drained (close_notify, then FIN). */
void sl_stream_shutdown(struct sl_stream *s);
/* Sends close_notify once @out is drained, and nothing else: for a stream about to be closed
 * (whose close() sends the FIN). */
void sl_stream_close_notify(struct sl_stream *s);
/* SL_READ/SL_WRITE the stream needs from the loop, given whether we want to read now. */
unsigned sl_stream_events(const struct sl_stream *s, int want_read);
/* Sets up @ssl (an upstream connection) to present @name as SNI and to verify the server's
 * certificate for it, by subjectAltName only: a name only in the subject CN is refused, as
 * browsers and Go refuse it (CA/B Forum BR 7.1.4.2). 0 or -ENOMEM. */
int sl_tls_set_upstream_name(SSL *ssl, const char *name);
/* Why the upstream handshake of @ssl failed, for the 502 and its event. */
void sl_tls_upstream_why(SSL *ssl, const char *name, char *buf, size_t len);
/*
 * The client leg: remembers what the handshake of @ssl went through (the alert the client
 * sent, whether our certificate went out), so that a client that does not trust the
 * sandbox's CA is told apart from any other failure (sl_tls_client_distrust()).
 */
void sl_tls_watch_client(SSL *ssl);
/* Whether the failed handshake of @ssl (watched) looks like a client that rejected the
 * certificate: an unknown_ca, bad_certificate or certificate_unknown alert, or the
 * connection closed right after our certificate went out. */
int sl_tls_client_distrust(SSL *ssl);
/* A short reason for the last TLS error of this thread (for logs and events). */
const char *sl_tls_error(char *buf, size_t len);

#endif

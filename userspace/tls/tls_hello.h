/* SPDX-License-Identifier: MIT */
/*
 * The first bytes of a connection the kernel redirected to the proxy: which protocol the
 * client speaks (sl_tls_sniff()) and, for TLS, what its ClientHello asks for
 * (sl_tls_parse_client_hello()): the server name the policy is checked against before any
 * certificate is minted or upstream connection made, the ALPN protocols, TLS 1.3, and whether
 * the client tries to hide the name (ECH). Both read bytes the proxy peeked (MSG_PEEK), so
 * that OpenSSL later reads the same hello from the socket: a -EAGAIN means "peek again once
 * more bytes arrived", never "consume". Pure functions over hostile byte buffers, no
 * allocation, no state (see tls_hello.c).
 *
 * Threading: any thread; nothing blocks (about 24 KiB of stack, see below).
 *
 * ECH (draft-ietf-tls-esni): the extension hides the real server name behind a public one, so
 * a proxy that passes the hello on untouched (no interception) must refuse it. Note that
 * browsers send a GREASE ECH extension (random bytes, draft §6.2) whenever they hold no ECH
 * configuration, which is the common case here (the DNS proxy answers HTTPS queries NODATA):
 * @ech does not tell the two apart, nobody can. A proxy that terminates TLS itself may let
 * such a hello through: an ECH offer it cannot decrypt is rejected in the handshake, and the
 * client then accepts only a certificate for the public name, @sni ("Handling ECH Rejection").
 */
#ifndef SL_TLS_HELLO_H
#define SL_TLS_HELLO_H

#include <stddef.h>
#include <stdint.h>

/* sl_tls_sniff() results; not SL_PROTO_*, which bpf/sluice.h uses for L4 protocols. */
#define SL_SNIFF_TLS 1
#define SL_SNIFF_HTTP 2
#define SL_SNIFF_MAX 8 /* bytes after which sl_tls_sniff() always decides ("OPTIONS ") */

#define SL_TLS_RECORD_MAX 16384 /* plaintext fragment (RFC 8446 §5.1) */
#define SL_TLS_HELLO_MAX 16384 /* ClientHello message, its 4-byte header included */
/* Stream bytes that the records of an accepted ClientHello fit in: the hello and room for the
 * headers of a fragmented one. A caller that peeked this many bytes never gets -EAGAIN. */
#define SL_TLS_PEEK_MAX 20480
#define SL_TLS_SNI_BUF 254 /* a host name as text: at most 253 characters and the NUL */

/* ALPN protocols offered (struct sl_client_hello.alpn) */
#define SL_TLS_ALPN_HTTP11 0x1 /* "http/1.1" */
#define SL_TLS_ALPN_HTTP10 0x2 /* "http/1.0" */
#define SL_TLS_ALPN_H2 0x4 /* "h2" */
#define SL_TLS_ALPN_OTHER 0x8 /* anything else: "h3", "dot", "acme-tls/1", GREASE, ... */

/* What sl_tls_parse_client_hello() found in a ClientHello. */
struct sl_client_hello {
	size_t len; /* stream bytes of the records that hold the hello, headers included */
	uint8_t sni_present; /* a server_name extension was sent */
	uint8_t sni_ok; /* ... and its name is a host name, in @sni */
	char sni[SL_TLS_SNI_BUF]; /* lower case, no trailing dot; "" unless @sni_ok */
	uint8_t alpn_present; /* an ALPN extension was sent */
	uint8_t alpn; /* SL_TLS_ALPN_* bits */
	uint8_t tls13; /* supported_versions lists TLS 1.3 (0x0304) */
	uint8_t ech; /* encrypted_client_hello (0xfe0d) or the draft ESNI (0xffce) is present */
};

/*
 * Classifies the start @buf (@len bytes) of a client's stream. TLS: a handshake record header,
 * type 22, version 3.0..3.4 (the record version of TLS 1.0 to 1.3 hellos), length 1..2^14.
 * HTTP/1.x: one of GET HEAD POST PUT DELETE OPTIONS PATCH CONNECT TRACE, upper case, then a
 * space; other methods (WebDAV's, h2c's "PRI") are not HTTP here. An SSLv2-format hello is not
 * TLS here either. Returns SL_SNIFF_TLS, SL_SNIFF_HTTP, -EAGAIN while @buf is a strict prefix
 * of what either starts with (never once @len >= SL_SNIFF_MAX), or -EPROTO for anything else:
 * close the connection. Never reads outside @buf[0..@len).
 */
int sl_tls_sniff(const uint8_t *buf, size_t len);

/*
 * Parses the ClientHello at the start of the stream bytes @buf (@len bytes) into @ch. The
 * hello may span several consecutive handshake records, which must carry nothing else: the
 * last one ends where the hello ends (nothing may follow a ClientHello in its flight, RFC 8446
 * §5.1); records after it are not looked at. Checks every length at every layer: record,
 * handshake header, session id (<= 32), cipher suites (even, >= 2), compression methods
 * (>= 1), the extension block (which must end exactly where the message ends; a hello without
 * one is accepted, RFC 5246 §7.4.1.2), each extension, and the contents of server_name,
 * ALPN and supported_versions.
 *
 * server_name (RFC 6066 §3) must hold exactly one name, of type host_name (what OpenSSL's
 * server reads too, so that the proxy and the policy see the same name). The name is then
 * checked as a host name: 1..253 characters once one trailing dot is dropped (RFC 6066 says
 * there is none; some clients send it and it names the same host), labels of 1..63 letters,
 * digits, '-' or '_', not starting or ending with '-', the last label not all digits. A name
 * that fails (an IP address literal, which RFC 6066 forbids, a NUL, a space, ...) leaves
 * @ch->sni_present set and @ch->sni_ok clear: the hello has no usable name, and the proxy
 * treats it as having none. Accepted names are the ones sl_ca_leaf() mints leaves for.
 *
 * Returns 0; -EAGAIN when @buf is a prefix of a hello that may still be valid (peek again
 * with more bytes; never when @len >= SL_TLS_PEEK_MAX); -EPROTO when the stream does not start
 * with a TLS handshake record or the message is not a ClientHello; -EMSGSIZE when the hello is
 * longer than SL_TLS_HELLO_MAX or its records run past SL_TLS_PEEK_MAX; -EINVAL when it is
 * malformed (any length that does not add up, a record of another type or an empty record
 * before the hello ends, bytes after the hello in its last record, an extension type twice
 * (RFC 8446 §4.2), pre_shared_key not last (§4.2.11)). On error @ch is to be ignored. Never
 * reads outside @buf[0..@len). Uses about 24 KiB of stack; any thread.
 */
int sl_tls_parse_client_hello(const uint8_t *buf, size_t len, struct sl_client_hello *ch);

#endif

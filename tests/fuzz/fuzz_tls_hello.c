// SPDX-License-Identifier: MIT
/*
 * The first bytes of a redirected connection, as the proxy peeks them: sl_tls_sniff() and
 * sl_tls_parse_client_hello() on any bytes. The proxy peeks again after -EAGAIN, so the
 * answers must be consistent across prefixes of one stream:
 * - a prefix of a stream whose hello parses (or may still parse) gets -EAGAIN, never an
 *   error, and never an answer once SL_TLS_PEEK_MAX bytes are there;
 * - a hello that parses gives the same result from any longer stream (nothing after its
 *   records is read), and from exactly its own records;
 * - what comes out (name, lengths) obeys the header's rules.
 */
#include <errno.h>
#include <string.h>

#include "fuzz.h"
#include "tls/tls_hello.h"

static int same_hello(const struct sl_client_hello *a, const struct sl_client_hello *b)
{
	return a->len == b->len && a->sni_present == b->sni_present && a->sni_ok == b->sni_ok &&
	       !strcmp(a->sni, b->sni) && a->alpn_present == b->alpn_present &&
	       a->alpn == b->alpn && a->tls13 == b->tls13 && a->ech == b->ech;
}

static void check_sni(const struct sl_client_hello *ch)
{
	size_t n = strlen(ch->sni);

	FUZZ_CHECK(n < SL_TLS_SNI_BUF);
	if (!ch->sni_ok) {
		FUZZ_CHECK(n == 0);
		return;
	}
	FUZZ_CHECK(ch->sni_present && n >= 1 && n <= 253 && ch->sni[n - 1] != '.' &&
		   ch->sni[0] != '.' && !strstr(ch->sni, ".."));
	for (size_t i = 0; i < n; i++) {
		char c = ch->sni[i];

		FUZZ_CHECK((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' ||
			   c == '_' || c == '.');
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct sl_client_hello ch, ch2;
	int r, r2, s;
	size_t k;

	s = sl_tls_sniff(data, size);
	FUZZ_CHECK(s == SL_SNIFF_TLS || s == SL_SNIFF_HTTP || s == -EAGAIN || s == -EPROTO);
	FUZZ_CHECK(s != -EAGAIN || size < SL_SNIFF_MAX);
	if (size > 1) {
		/* a decided prefix stays decided */
		int sp = sl_tls_sniff(data, size - 1);

		FUZZ_CHECK(sp == -EAGAIN || sp == s);
	}

	r = sl_tls_parse_client_hello(data, size, &ch);
	FUZZ_CHECK(r == 0 || r == -EAGAIN || r == -EPROTO || r == -EINVAL || r == -EMSGSIZE);
	FUZZ_CHECK(r != -EAGAIN || size < SL_TLS_PEEK_MAX);
	/* the proxy parses only what it sniffed as TLS */
	FUZZ_CHECK(r != 0 || s == SL_SNIFF_TLS);
	if (r != 0 && r != -EAGAIN)
		return 0;

	/* strict prefixes of the hello's records: the last byte short, one chosen by the input */
	if (size) {
		size_t end = r == 0 ? ch.len : size;

		k = end - 1;
		FUZZ_CHECK(sl_tls_parse_client_hello(data, k, &ch2) == -EAGAIN);
		k = (data[size - 1] | (size_t)data[size / 2] << 8) % end;
		FUZZ_CHECK(sl_tls_parse_client_hello(data, k, &ch2) == -EAGAIN);
	}
	if (r == -EAGAIN)
		return 0;

	FUZZ_CHECK(ch.len >= 9 && ch.len <= size && ch.len <= SL_TLS_PEEK_MAX);
	check_sni(&ch);
	if (ch.alpn_present)
		FUZZ_CHECK(ch.alpn != 0);
	/* exactly its records, or its records and more, give the same hello */
	r2 = sl_tls_parse_client_hello(data, ch.len, &ch2);
	FUZZ_CHECK(r2 == 0 && same_hello(&ch, &ch2));
	k = ch.len + (size - ch.len) / 2;
	r2 = sl_tls_parse_client_hello(data, k, &ch2);
	FUZZ_CHECK(r2 == 0 && same_hello(&ch, &ch2));
	return 0;
}

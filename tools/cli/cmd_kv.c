// SPDX-License-Identifier: MIT
/* sluice kv put|get|rm|ls: sluiced's KV store (/v1/kv/NS/KEY). Values are secrets: every
 * buffer that held one is wiped. */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>
#include <openssl/crypto.h>

#include "core/buf.h"
#include "cli.h"
#include "store/kv.h"

static const char kv_usage[] =
	"Usage: sluice kv put NS KEY [VALUE]\n"
	"       sluice kv get NS KEY\n"
	"       sluice kv rm NS KEY\n"
	"       sluice kv ls NS\n"
	"\n"
	"The KV store of sluiced: values (secrets, typically) that the policies' handlers read\n"
	"as env.NS:get(KEY) and that never enter a sandbox. sluiced keeps them encrypted on\n"
	"disk (AES-256-GCM, STATE_DIR/kv/).\n"
	"\n"
	"  put   stores VALUE, or without VALUE everything read from stdin up to end of file,\n"
	"        byte for byte (a trailing newline is kept: use printf '%s' or echo -n).\n"
	"        Prefer stdin for secrets: a VALUE argument is visible in ps and in the\n"
	"        shell's history.\n"
	"  get   writes the value to stdout exactly, with no newline added\n"
	"  rm    removes the key\n"
	"  ls    lists the keys of NS, one per line (never values)\n"
	"\n"
	"NS: 1 to 128 of A-Z a-z 0-9 _ . : @ -. KEY: 1 to 512 printable ASCII characters.\n"
	"Values: at most 64 KiB.\n";

/* Appends @s to @b percent-encoded: everything but RFC 3986's unreserved characters. */
static void append_pct(struct sl_buf *b, const char *s)
{
	for (; *s; s++) {
		unsigned char ch = *s;

		if ((ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') ||
		    (ch >= '0' && ch <= '9') || ch == '-' || ch == '.' || ch == '_' || ch == '~')
			sl_buf_append(b, s, 1);
		else
			sl_buf_printf(b, "%%%02X", ch);
	}
}

/* "/v1/kv/NS[/KEY]", checked and encoded; a bad name is a usage error. */
static void kv_path(struct sl_buf *b, const char *ns, const char *key)
{
	if (!sl_kv_ns_ok(ns))
		sl_cli_usage_error("kv ",
				   "invalid namespace '%s': 1 to 128 of A-Z a-z 0-9 _ . : @ -", ns);
	if (key && !sl_kv_key_ok(key))
		sl_cli_usage_error("kv ", "invalid key: 1 to 512 printable ASCII characters");
	sl_buf_printf(b, "/v1/kv/");
	append_pct(b, ns);
	if (key) {
		sl_buf_printf(b, "/");
		append_pct(b, key);
	}
}

/* Reads stdin to its end, at most SL_KV_VALUE_MAX bytes, into @b. */
static void read_stdin_value(struct sl_buf *b)
{
	char buf[4096];

	if (isatty(STDIN_FILENO))
		fprintf(stderr, "sluice: reading the value from stdin (end it with Ctrl-D)\n");
	for (;;) {
		ssize_t n = read(STDIN_FILENO, buf, sizeof(buf));

		if (n == -1 && errno == EINTR)
			continue;
		if (n == -1)
			sl_cli_die("reading the value from stdin failed: %s", strerror(errno));
		if (n == 0)
			break;
		if (sl_buf_size(b) + n > SL_KV_VALUE_MAX) {
			OPENSSL_cleanse(buf, sizeof(buf));
			sl_cli_die("the value is larger than %d bytes", SL_KV_VALUE_MAX);
		}
		sl_buf_append(b, buf, n);
	}
	OPENSSL_cleanse(buf, sizeof(buf));
}

static int cmd_kv_put(int argc, char **argv, const char *sock)
{
	struct sl_buf path = { 0 }, val = { 0 };
	struct sl_cli_req rq = { .method = "PUT", .ctype = "application/octet-stream" };
	struct sl_cli_resp res;
	json_t *j;

	if (argc != 2 && argc != 3)
		sl_cli_usage_error("kv ", "kv put takes NS KEY and an optional VALUE");
	kv_path(&path, argv[0], argv[1]);
	if (argc == 3)
		sl_buf_append(&val, argv[2], strlen(argv[2]));
	else
		read_stdin_value(&val);
	if (sl_buf_size(&val) > SL_KV_VALUE_MAX)
		sl_cli_die("the value is larger than %d bytes", SL_KV_VALUE_MAX);
	rq.path = path.data;
	rq.body = val.data ? val.data : "";
	rq.body_len = sl_buf_size(&val);
	sl_cli_request_or_die(sock, &rq, &res);
	if (val.data)
		OPENSSL_cleanse(val.data, val.len);
	sl_buf_free(&val);
	sl_buf_free(&path);
	j = sl_cli_json_or_die(&res);
	printf("kv %s/%s stored (%lld bytes)\n", argv[0], argv[1], sl_cli_num(j, "bytes"));
	json_decref(j);
	return 0;
}

static int cmd_kv_get(int argc, char **argv, const char *sock)
{
	struct sl_buf path = { 0 };
	struct sl_cli_resp res;

	if (argc != 2)
		sl_cli_usage_error("kv ", "kv get takes NS KEY");
	kv_path(&path, argv[0], argv[1]);
	sl_cli_call_or_die(sock, "GET", path.data, NULL, &res);
	sl_buf_free(&path);
	if (res.status != 200)
		sl_cli_json_or_die(&res); /* dies with the daemon's message */
	fwrite(sl_buf_head(&res.body), 1, sl_buf_size(&res.body), stdout);
	if (res.body.data)
		OPENSSL_cleanse(res.body.data, res.body.len);
	sl_buf_free(&res.body);
	if (fflush(stdout) == EOF)
		sl_cli_die("writing the value failed: %s", strerror(errno));
	return 0;
}

static int cmd_kv_rm(int argc, char **argv, const char *sock)
{
	struct sl_buf path = { 0 };
	struct sl_cli_resp res;
	json_t *j;

	if (argc != 2)
		sl_cli_usage_error("kv ", "kv rm takes NS KEY");
	kv_path(&path, argv[0], argv[1]);
	sl_cli_call_or_die(sock, "DELETE", path.data, NULL, &res);
	sl_buf_free(&path);
	j = sl_cli_json_or_die(&res);
	printf("kv %s/%s removed\n", argv[0], argv[1]);
	json_decref(j);
	return 0;
}

static int cmd_kv_ls(int argc, char **argv, const char *sock)
{
	struct sl_buf path = { 0 };
	struct sl_cli_resp res;
	json_t *j, *k;
	size_t i;

	if (argc != 1)
		sl_cli_usage_error("kv ", "kv ls takes NS");
	kv_path(&path, argv[0], NULL);
	sl_cli_call_or_die(sock, "GET", path.data, NULL, &res);
	sl_buf_free(&path);
	j = sl_cli_json_or_die(&res);
	json_array_foreach(json_object_get(j, "keys"), i, k)
		printf("%s\n", json_string_value(k));
	json_decref(j);
	return 0;
}

int sl_cli_cmd_kv(int argc, char **argv, const char *sock)
{
	static const struct sl_cli_cmd cmds[] = {
		{ "put", cmd_kv_put },
		{ "get", cmd_kv_get },
		{ "rm", cmd_kv_rm },
		{ "ls", cmd_kv_ls },
		{ 0 },
	};

	if (argc < 1 || sl_cli_has_help(argc, argv)) {
		fputs(kv_usage, argc < 1 ? stderr : stdout);
		return argc < 1 ? 2 : 0;
	}
	return sl_cli_select(cmds, "kv ", argc, argv, sock);
}

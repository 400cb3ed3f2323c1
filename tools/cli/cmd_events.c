// SPDX-License-Identifier: MIT
/* sluice events, ca and stats: what sluiced reports (GET /v1/events, /v1/sandboxes/NAME/ca,
 * /v1/metrics), copied to stdout as it comes. */
#include <stdio.h>
#include <string.h>

#include <jansson.h>

#include "core/buf.h"
#include "cli.h"

static const char events_usage[] =
	"Usage: sluice events [--sandbox NAME] [--follow]\n"
	"\n"
	"Prints recent events as JSON lines: kernel denies (type deny), DNS decisions (type\n"
	"dns) and intercepted requests (type http).\n"
	"  --sandbox NAME   only this sandbox's events (also of a removed sandbox, while its\n"
	"                   history is kept: the last 64 removed)\n"
	"  -f, --follow     keep printing new events until interrupted\n";

static const char stats_usage[] =
	"Usage: sluice stats\n"
	"\n"
	"Prints sluiced's metrics in the Prometheus text format: per-sandbox counters of\n"
	"allowed and denied connections by protocol, refused sockets and deny events.\n";

int sl_cli_cmd_events(int argc, char **argv, const char *sock)
{
	const char *sandbox = NULL;
	int follow = 0;
	struct sl_cli_resp res;
	char path[256];
	struct sl_cli_req rq = { .method = "GET", .path = path, .stream = stdout };

	if (sl_cli_has_help(argc, argv)) {
		fputs(events_usage, stdout);
		return 0;
	}
	for (int i = 0; i < argc; i++) {
		if (!strcmp(argv[i], "--sandbox") && i + 1 < argc)
			sandbox = argv[++i];
		else if (!strncmp(argv[i], "--sandbox=", 10))
			sandbox = argv[i] + 10;
		else if (!strcmp(argv[i], "--follow") || !strcmp(argv[i], "-f"))
			follow = 1;
		else
			sl_cli_usage_error("events ", "unexpected argument '%s'", argv[i]);
	}
	if (sandbox)
		sl_cli_check_name(sandbox);
	snprintf(path, sizeof(path), "/v1/events?follow=%d%s%s", follow, sandbox ? "&sandbox=" : "",
		 sandbox ? sandbox : "");
	sl_cli_request_or_die(sock, &rq, &res);
	if (res.status != 200)
		sl_cli_json_or_die(&res); /* dies with the daemon's message */
	return 0;
}

static const char ca_usage[] =
	"Usage: sluice ca NAME\n"
	"\n"
	"Prints the certificate (PEM) of the sandbox's own CA. sluice intercepts the TLS of the\n"
	"names in the policy's egress.intercept with certificates this CA signs: put it in the\n"
	"sandbox's trust store (e.g. curl --cacert, NODE_EXTRA_CA_CERTS, SSL_CERT_FILE).\n"
	"Its key never leaves sluiced.\n";

int sl_cli_cmd_ca(int argc, char **argv, const char *sock)
{
	struct sl_cli_resp res;
	char path[256];

	if (sl_cli_has_help(argc, argv)) {
		fputs(ca_usage, stdout);
		return 0;
	}
	if (argc != 1)
		sl_cli_usage_error("ca ", "ca takes exactly one sandbox NAME");
	sl_cli_check_name(argv[0]);
	snprintf(path, sizeof(path), "/v1/sandboxes/%s/ca", argv[0]);
	sl_cli_call_or_die(sock, "GET", path, NULL, &res);
	if (res.status != 200)
		sl_cli_json_or_die(&res);
	fwrite(sl_buf_head(&res.body), 1, sl_buf_size(&res.body), stdout);
	sl_buf_free(&res.body);
	return 0;
}

int sl_cli_cmd_stats(int argc, char **argv, const char *sock)
{
	struct sl_cli_resp res;

	if (sl_cli_has_help(argc, argv)) {
		fputs(stats_usage, stdout);
		return 0;
	}
	if (argc)
		sl_cli_usage_error("stats ", "stats takes no arguments");
	sl_cli_call_or_die(sock, "GET", "/v1/metrics", NULL, &res);
	if (res.status != 200)
		sl_cli_json_or_die(&res);
	fwrite(sl_buf_head(&res.body), 1, sl_buf_size(&res.body), stdout);
	sl_buf_free(&res.body);
	return 0;
}

// SPDX-License-Identifier: MIT
/*
 * The kernel's rule lookup alone (sl_verdict4 of bpf/verdict.h, run by BPF_PROG_RUN in the
 * unit tests' tc program tests/bpf/verdict_test.bpf.c): N whole-address entries of 10
 * sandboxes, held the way sluice keeps them (the address hash, sl_hosts4, "hash") or the way
 * it did before (the prefix trie, sl_rules4, "trie"), in maps of the program's own (nothing
 * pinned, no sandbox touched).
 *
 *     bench_lookup N     prints "LAYOUT N SAME_NS RANDOM_NS MISS_NS" for trie, then hash
 *
 * SAME_NS: one address looked up 1,000,000 times in one run (the kernel's mean: the lookup's
 * path stays in the cache). RANDOM_NS: 100,000 runs of one lookup each, of random entries
 * (the mean of the kernel's per-run time, which includes its clock reads: compare layouts and
 * sizes, not with SAME_NS), the cache cooled by the system call between them, as among a
 * host's many destinations. MISS_NS: as RANDOM_NS, addresses no entry names (a denial).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <bpf/bpf.h>
#include <bpf/libbpf.h>

#include "sluice.h"
#include "verdict_test.h"
#include "verdict_test.skel.h"

#define SANDBOXES 10
#define RANDOM_RUNS 100000

static void addr_of(unsigned i, __u8 a[4])
{
	a[0] = 10;
	a[1] = (__u8)(i >> 16);
	a[2] = (__u8)(i >> 8);
	a[3] = (__u8)i;
}

/* The program's mean time per run for @i's address over @repeat runs; exits unless the
 * verdict is @want. */
static long run(struct verdict_test_bpf *skel, unsigned i, int repeat, int want)
{
	struct sl_verdict_query q = { .sandbox_id = 1 + i % SANDBOXES,
				      .family = 4,
				      .now_ns = 1,
				      .port = 443,
				      .proto_bit = SL_PROTO_TCP };
	unsigned char pkt[64] = { 0 };
	LIBBPF_OPTS(bpf_test_run_opts, o, .data_in = pkt, .data_size_in = sizeof(pkt),
		    .repeat = repeat);

	addr_of(i, q.addr);
	memcpy(pkt, &q, sizeof(q));
	if (bpf_prog_test_run_opts(bpf_program__fd(skel->progs.sl_verdict_test), &o)) {
		perror("bench_lookup: BPF_PROG_RUN");
		exit(1);
	}
	if ((int)o.retval != want) {
		fprintf(stderr, "bench_lookup: verdict %u for entry %u, want %d\n", o.retval, i,
			want);
		exit(1);
	}
	return (long)o.duration;
}

static int fill(int fd, unsigned n)
{
	const unsigned chunk = 8192;
	struct sl_key4 *k = calloc(chunk, sizeof(*k));
	struct sl_rule *v = calloc(chunk, sizeof(*v));
	int err = !k || !v;

	for (unsigned i = 0; !err && i < n;) {
		LIBBPF_OPTS(bpf_map_batch_opts, bo);
		__u32 c = 0;

		for (; c < chunk && i < n; c++, i++) {
			k[c] = (struct sl_key4){ .prefixlen = 64, .sandbox_id = 1 + i % SANDBOXES };
			addr_of(i, k[c].addr);
			v[c] = (struct sl_rule){ .n = 1 };
			v[c].r[0] = (struct sl_port_range){ .lo = 443,
							    .hi = 443,
							    .verdict = SL_VERDICT_ALLOW,
							    .protos = SL_PROTO_TCP };
		}
		err = bpf_map_update_batch(fd, k, v, &c, &bo);
		if (err)
			perror("bench_lookup: BPF_MAP_UPDATE_BATCH");
	}
	free(k);
	free(v);
	return err;
}

static int measure(unsigned n, int hosts)
{
	struct verdict_test_bpf *skel = verdict_test_bpf__open();
	struct bpf_map *m;
	long same, sum = 0, miss = 0;

	if (!skel) {
		perror("bench_lookup: open");
		return 1;
	}
	bpf_object__for_each_map(m, skel->obj)
		bpf_map__set_pin_path(m, NULL);
	bpf_map__set_max_entries(skel->maps.sl_rules4, n + 16);
	bpf_map__set_max_entries(skel->maps.sl_hosts4, n + 16);
	if (verdict_test_bpf__load(skel) ||
	    fill(bpf_map__fd(hosts ? skel->maps.sl_hosts4 : skel->maps.sl_rules4), n)) {
		fprintf(stderr, "bench_lookup: loading %u entries failed\n", n);
		verdict_test_bpf__destroy(skel);
		return 1;
	}
	same = run(skel, n / 2, 1000000, SL_VERDICT_ALLOW);
	srand(1);
	for (unsigned r = 0; r < RANDOM_RUNS; r++)
		sum += run(skel, (unsigned)rand() % n, 1, SL_VERDICT_ALLOW);
	for (unsigned r = 0; r < RANDOM_RUNS; r++)
		miss += run(skel, n + (unsigned)rand() % n, 1, SL_VERDICT_DENY);
	printf("%s %u %ld %.0f %.0f\n", hosts ? "hash" : "trie", n, same, (double)sum / RANDOM_RUNS,
	       (double)miss / RANDOM_RUNS);
	verdict_test_bpf__destroy(skel);
	return 0;
}

int main(int argc, char **argv)
{
	unsigned long n;

	if (argc != 2 || (n = strtoul(argv[1], NULL, 10)) == 0 || n > (1u << 23)) {
		fprintf(stderr, "usage: bench_lookup N (1..8388608)\n");
		return 2;
	}
	return measure((unsigned)n, 0) || measure((unsigned)n, 1);
}

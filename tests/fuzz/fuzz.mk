# SPDX-License-Identifier: MIT
# libFuzzer targets for the parsers that read sandbox (and upstream, and policy) bytes.
# Included by the top Makefile. Everything built or found lands in build/fuzz/:
#   build/fuzz/fuzz_<name>         the targets (clang, libFuzzer + ASan + UBSan)
#   build/fuzz/obj/                the userspace modules and llhttp, built with the same flags
#   build/fuzz/corpus/<name>/      what `make fuzz` discovers (seeds stay in tests/fuzz/corpus)
#   build/fuzz/artifacts/<name>/   crashes, leaks, timeouts
# `make fuzz` fuzzes each target for FUZZ_SECONDS; `make fuzz-replay` runs every seed and
# regression input of tests/fuzz/corpus/ once (part of `make test`).

# build/fuzz whatever OUTPUT is: the targets carry their own sanitizers (SAN=1 changes nothing).
FUZZ_OUT := build/fuzz
FUZZ_OBJ := $(FUZZ_OUT)/obj
FUZZ_SRC := tests/fuzz
FUZZ_CC ?= clang
FUZZ_SECONDS ?= 60
FUZZ_RSS_MB ?= 2048
FUZZ_TARGETS ?= dns_query dns_answer tls_hello http policy entry control
FUZZ_SAN := -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined
# -Werror for the harnesses only: a clang warning in a module someone is editing must not
# stop the fuzzers (the gcc build holds the modules to -Werror).
FUZZ_CFLAGS := -g -O1 -fno-omit-frame-pointer $(FUZZ_SAN) -std=gnu11 -D_GNU_SOURCE \
	-fno-strict-aliasing -Wall -Wextra -Wno-unknown-warning-option
FUZZ_CPPFLAGS := -I$(OBJ) -Ibpf -Iuserspace -I$(LLHTTP_INC) $(PKG_CFLAGS)

# The modules each target needs, compiled from source with FUZZ_CFLAGS (never libsluice.a:
# it is built by $(CC) without sanitizers or coverage).
FUZZ_MODS_dns_query := dns_msg
FUZZ_MODS_dns_answer := dns_msg
FUZZ_MODS_tls_hello := tls_hello
# the proxy's own head checks (px_h1_check.c), with the Accept-Encoding filter of mask.c
FUZZ_MODS_http := http buf mask px_h1_check
FUZZ_MODS_entry := policy rules dns_msg log addr
# fuzz_policy also runs sl_lua_load(): the policy, the Lua host and the handler API. The host
# reaches the proxy's exchanges only through the table sluiced hands it (sl_lua_opts.xchg,
# lua_px.c), which the fuzzer leaves NULL (no input runs a request): no proxy file is linked.
FUZZ_MODS_policy := policy rules dns_msg addr buf log loop jsonw events lua_vm lua_policy \
	lua_host lua_api envfile file kv http
# the body decoder of POST /v1/sandboxes and the error body (ctl_decode.c), nothing else
FUZZ_MODS_control := ctl_decode jsonw buf loop
FUZZ_LLHTTP_http := 1
FUZZ_LLHTTP_policy := 1
FUZZ_LIBS_policy := $(PKG_LIBS) -lelf -lz -lpthread -lm
FUZZ_LIBS_http := -lz
FUZZ_LIBS_control := $(PKG_LIBS)
# Per-target libFuzzer options: a ClientHello's records may take SL_TLS_PEEK_MAX (20 KiB) bytes.
FUZZ_OPTS_tls_hello := -max_len=24576
FUZZ_OPTS_http := -max_len=8192
# An input that runs longer than this is a hang (a policy that loops stops at its instruction
# cap well before).
FUZZ_TIMEOUT ?= 25

FUZZ_LLHTTP_OBJS := $(patsubst $(LLHTTP_DIR)/%.c,$(FUZZ_OBJ)/llhttp_%.o,$(wildcard $(LLHTTP_DIR)/*.c))
FUZZ_BINS := $(patsubst %,$(FUZZ_OUT)/fuzz_%,$(FUZZ_TARGETS))

$(FUZZ_OBJ):
	$(Q)mkdir -p $@

$(FUZZ_OBJ)/%.o: %.c $(US_HDRS) $(BPF_HDRS) $(SKELS) | $(FUZZ_OBJ)
	$(call msg,FUZZ-CC,$@)
	$(Q)$(FUZZ_CC) $(FUZZ_CPPFLAGS) $(FUZZ_CFLAGS) -c $< -o $@

$(FUZZ_OBJ)/llhttp_%.o: $(LLHTTP_DIR)/%.c | $(FUZZ_OBJ)
	$(call msg,FUZZ-CC,$@)
	$(Q)$(FUZZ_CC) -g -O1 -fno-omit-frame-pointer $(FUZZ_SAN) -DLLHTTP_STRICT_MODE=1 \
		-I$(LLHTTP_INC) -c $< -o $@

# One link rule per target: its harness, the modules it names, llhttp if it parses HTTP.
define FUZZ_TARGET_RULE
$(FUZZ_OUT)/fuzz_$(1): $(FUZZ_SRC)/fuzz_$(1).c $(FUZZ_SRC)/fuzz.h \
		$(patsubst %,$(FUZZ_OBJ)/%.o,$(FUZZ_MODS_$(1))) \
		$(if $(FUZZ_LLHTTP_$(1)),$(FUZZ_LLHTTP_OBJS)) | $(FUZZ_OBJ)
	$$(call msg,FUZZ-LD,$$@)
	$$(Q)$(FUZZ_CC) $(FUZZ_CPPFLAGS) $(FUZZ_CFLAGS) -Werror $$(filter %.c %.o,$$^) \
		$(FUZZ_LIBS_$(1)) -o $$@
endef
$(foreach t,$(FUZZ_TARGETS),$(eval $(call FUZZ_TARGET_RULE,$(t))))

fuzz-build: $(FUZZ_BINS)

# Bounded runs, one target after the other. New inputs go to build/fuzz/corpus/<name>; copy
# the interesting ones (and every crash, renamed crash-<what>) to tests/fuzz/corpus/<name>.
# A failing target does not stop the others; `make fuzz` fails at the end.
FUZZ_RUN = echo "== fuzz_$(1) ($(FUZZ_SECONDS)s)"; \
	mkdir -p $(FUZZ_OUT)/corpus/$(1) $(FUZZ_OUT)/artifacts/$(1); \
	$(FUZZ_OUT)/fuzz_$(1) -max_total_time=$(FUZZ_SECONDS) -rss_limit_mb=$(FUZZ_RSS_MB) \
		-timeout=$(FUZZ_TIMEOUT) -print_final_stats=1 \
		-artifact_prefix=$(FUZZ_OUT)/artifacts/$(1)/ \
		$(if $(wildcard $(FUZZ_SRC)/$(1).dict),-dict=$(FUZZ_SRC)/$(1).dict) $(FUZZ_OPTS_$(1)) \
		$(FUZZ_OUT)/corpus/$(1) $(FUZZ_SRC)/corpus/$(1) || failed="$$failed $(1)";

fuzz: $(FUZZ_BINS)
	$(Q)failed=; $(foreach t,$(FUZZ_TARGETS),$(call FUZZ_RUN,$(t))) \
	if [ -n "$$failed" ]; then \
		echo "fuzz: failures in:$$failed (inputs in $(FUZZ_OUT)/artifacts/)"; exit 1; \
	fi

# Every committed input once: seeds and crash regressions. Fast; part of `make test`.
fuzz-replay: $(FUZZ_BINS)
	$(Q)set -e; for t in $(FUZZ_TARGETS); do \
		echo "== fuzz_$$t: $$(ls $(FUZZ_SRC)/corpus/$$t | wc -l) inputs"; \
		$(FUZZ_OUT)/fuzz_$$t -rss_limit_mb=$(FUZZ_RSS_MB) -timeout=$(FUZZ_TIMEOUT) $(FUZZ_SRC)/corpus/$$t/* \
			>$(FUZZ_OUT)/replay_$$t.log 2>&1 || { cat $(FUZZ_OUT)/replay_$$t.log; exit 1; }; \
	done

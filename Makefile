# SPDX-License-Identifier: MIT
# sluice: everything built lands in build/. `make V=1` shows the commands.

# make SAN=1 (what `make SANITIZE=address,undefined` does, built into build-san/ so that a
# plain build/ stays as it is): `make test SAN=1` runs every test against the sanitized binaries.
ifeq ($(SAN),1)
SANITIZE ?= address,undefined
OUTPUT := build-san
else
OUTPUT := build
endif
OBJ := $(OUTPUT)/.output
CLANG ?= clang
BPFTOOL ?= bpftool
CC ?= cc
PREFIX ?= /usr/local
PYTEST ?= /usr/bin/python3 -m pytest
ARCH := $(shell uname -m | sed 's/x86_64/x86/;s/aarch64/arm64/')

PKGS := lua5.4 jansson openssl libbpf sqlite3
PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS := $(shell pkg-config --libs $(PKGS) 2>/dev/null)
LLHTTP_DIR ?= /usr/share/llhttp
LLHTTP_INC ?= /usr/share/include/llhttp

CFLAGS ?= -g -O2
CFLAGS += -Wall -Wextra -Werror -std=gnu11 -D_GNU_SOURCE -fno-strict-aliasing -Wno-format-truncation -Wno-unknown-warning-option
CPPFLAGS += -I$(OBJ) -Ibpf -Iuserspace -I$(LLHTTP_INC) $(PKG_CFLAGS)
LDLIBS += $(PKG_LIBS) -lelf -lz -lpthread -lm
# make SANITIZE=address,undefined: every C binary built with those sanitizers
ifneq ($(SANITIZE),)
CFLAGS += -fsanitize=$(SANITIZE) -fno-omit-frame-pointer
# GCC's object-size warnings misread the instrumented code (a false -Warray-bounds in
# tests/unit/test_envfile.c): they hold in the plain build.
CFLAGS += -Wno-array-bounds -Wno-stringop-overflow
LDLIBS += -fsanitize=$(SANITIZE)
endif
BPF_CFLAGS := -g -O2 -Wall -Werror -target bpf -D__TARGET_ARCH_$(ARCH) -I. -Ibpf -I$(OBJ)

ifeq ($(V),1)
Q =
msg =
else
Q = @
msg = @printf '  %-8s %s\n' "$(1)" "$(2)";
endif

BPF_SRCS := $(wildcard bpf/*.bpf.c)
BPF_HDRS := $(wildcard bpf/*.h)
SKELS := $(patsubst bpf/%.bpf.c,$(OBJ)/%.skel.h,$(BPF_SRCS))
LIB_SRCS := $(filter-out userspace/main.c,$(wildcard userspace/*.c))
LIB_OBJS := $(patsubst userspace/%.c,$(OBJ)/%.o,$(LIB_SRCS))
LLHTTP_OBJS := $(patsubst $(LLHTTP_DIR)/%.c,$(OBJ)/llhttp/%.o,$(wildcard $(LLHTTP_DIR)/*.c))
UNIT_SRCS := $(wildcard tests/unit/test_*.c)
UNIT_BINS := $(patsubst tests/unit/%.c,$(OUTPUT)/tests/%,$(UNIT_SRCS))
BENCH_BINS := $(patsubst tests/bench/%.c,$(OUTPUT)/bench/%,$(wildcard tests/bench/*.c))

.DELETE_ON_ERROR:
# Skeletons and BPF objects are intermediates of several targets: keep them.
.SECONDARY:
.PHONY: all test unit e2e bench demo install clean fuzz fuzz-build fuzz-replay FORCE

all: $(OUTPUT)/sluiced $(OUTPUT)/sluice

# A fresh machine has none of the packages (no pkg-config, no bpf/bpf_helpers.h, no llhttp), so
# before anything is compiled tools/install-deps runs: make remakes an included makefile first
# and then reads this file again, so pkg-config's flags and llhttp's sources are found by the
# same `make`. The stamp makes it free once done (until tools/install-deps changes). Run by
# another user than root it can only name what is missing: the build goes on (it may not need
# all of it), and the next make run by root installs it.
DEPS_STAMP := $(OUTPUT)/.deps.mk
DEPS_RECHECK := $(if $(and $(filter 0,$(shell id -u)),$(shell grep -l MISSING $(DEPS_STAMP) 2>/dev/null)),FORCE)
ifeq ($(filter clean,$(MAKECMDGOALS)),)
include $(DEPS_STAMP)
endif
$(DEPS_STAMP): tools/install-deps $(DEPS_RECHECK)
	$(Q)mkdir -p $(@D)
	$(Q)if tools/install-deps; then \
		echo "# tools/install-deps found every package" > $@; \
	elif [ "$$(id -u)" -ne 0 ]; then \
		echo "make: going on without them; sudo tools/install-deps installs them" >&2; \
		echo "# MISSING: tools/install-deps was run as $$(id -un)" > $@; \
	else \
		exit 1; \
	fi
FORCE:

$(OBJ) $(OBJ)/llhttp $(OUTPUT)/tests $(OUTPUT)/bench:
	$(Q)mkdir -p $@

$(OBJ)/%.bpf.o: bpf/%.bpf.c $(BPF_HDRS) vmlinux.h | $(OBJ)
	$(call msg,BPF,$@)
	$(Q)$(CLANG) $(BPF_CFLAGS) -c $< -o $@

$(OBJ)/%.skel.h: $(OBJ)/%.bpf.o
	$(call msg,GEN-SKEL,$@)
	$(Q)$(BPFTOOL) gen skeleton $< name $(subst -,_,$*)_bpf > $@

$(OBJ)/llhttp/%.o: $(LLHTTP_DIR)/%.c | $(OBJ)/llhttp
	$(call msg,CC,$@)
	$(Q)$(CC) -g -O2 -fPIC -DLLHTTP_STRICT_MODE=1 -I$(LLHTTP_INC) -c $< -o $@

$(OBJ)/%.o: userspace/%.c $(wildcard userspace/*.h) $(BPF_HDRS) $(SKELS) | $(OBJ)
	$(call msg,CC,$@)
	$(Q)$(CC) $(CPPFLAGS) $(CFLAGS) -c $< -o $@

$(OBJ)/libsluice.a: $(LIB_OBJS) $(LLHTTP_OBJS)
	$(call msg,AR,$@)
	$(Q)rm -f $@ && ar rcs $@ $^

$(OUTPUT)/sluiced: $(OBJ)/main.o $(OBJ)/libsluice.a
	$(call msg,LINK,$@)
	$(Q)$(CC) $(CFLAGS) $^ $(LDLIBS) -o $@

CLI_SRCS := tools/sluice.c tools/client.c tools/run.c tools/run_trust.c tools/run_summary.c \
	tools/confine.c tools/oci_hook.c

$(OUTPUT)/sluice: $(CLI_SRCS) tools/cli.h tools/confine.h $(OBJ)/libsluice.a $(wildcard userspace/*.h)
	$(call msg,CC,$@)
	$(Q)$(CC) $(CPPFLAGS) $(CFLAGS) $(CLI_SRCS) $(OBJ)/libsluice.a $(LDLIBS) -lseccomp -o $@

$(OUTPUT)/tests/%: tests/unit/%.c $(OBJ)/libsluice.a $(SKELS) | $(OUTPUT)/tests
	$(call msg,CC,$@)
	$(Q)$(CC) $(CPPFLAGS) $(CFLAGS) $< $(OBJ)/libsluice.a $(LDLIBS) -lcmocka -o $@

$(OUTPUT)/bench/%: tests/bench/%.c $(OBJ)/libsluice.a $(SKELS) $(wildcard userspace/*.h) | $(OUTPUT)/bench
	$(call msg,CC,$@)
	$(Q)$(CC) $(CPPFLAGS) $(CFLAGS) $< $(OBJ)/libsluice.a $(LDLIBS) -o $@

unit: $(UNIT_BINS)
	$(Q)set -e; for t in $(UNIT_BINS); do echo "== $$t"; $$t; done

# The tests take their binaries from SLUICE_BUILD; SLUICE_SAN makes them check every
# sluiced they ran for sanitizer reports (tests/e2e/conftest.py).
e2e: all $(BENCH_BINS)
	$(Q)SLUICE_BUILD=$(abspath $(OUTPUT)) SLUICE_SAN=$(SANITIZE) $(PYTEST) -q tests/e2e

test: all unit fuzz-replay e2e

# Writes tests/bench/results/latest.{json,md} and *.svg. BENCH_ARGS: --smoke, or sections
# (connect scale dns https transfer mint); tests/e2e/test_bench_smoke.py runs --smoke.
bench: all $(BENCH_BINS)
	$(Q)/usr/bin/python3 tests/bench/run.py $(BENCH_ARGS)

demo: all
	$(Q)tools/demo

install: all
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(PREFIX)/sbin
	install -m 0755 $(OUTPUT)/sluice $(DESTDIR)$(PREFIX)/bin/sluice
	install -m 0755 $(OUTPUT)/sluiced $(DESTDIR)$(PREFIX)/sbin/sluiced

clean:
	rm -rf $(OUTPUT)

include tests/fuzz/fuzz.mk

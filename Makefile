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
DEPS_STAMP_FILE := $(OUTPUT)/.deps.mk
ARCH := $(shell uname -m | sed 's/x86_64/x86/;s/aarch64/arm64/')

PKGS := lua5.4 jansson openssl libbpf sqlite3 libpsl libnghttp2
LLHTTP_DIR ?= /usr/share/llhttp
LLHTTP_INC ?= /usr/share/include/llhttp
# Loud when a dependency is missing (tools/install-deps installs them; the stamp below runs it
# first), never a compile that fails later on a missing header. `make clean` needs none.
ifeq ($(filter clean,$(MAKECMDGOALS)),)
ifneq ($(wildcard $(DEPS_STAMP_FILE)),)
PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS))
PKG_LIBS := $(shell pkg-config --libs $(PKGS))
ifeq ($(PKG_LIBS),)
$(error pkg-config: $(shell pkg-config --print-errors --exists $(PKGS) 2>&1 | head -3) (of: $(PKGS)); run sudo tools/install-deps)
endif
ifeq ($(wildcard $(LLHTTP_DIR)/*.c),)
$(error no llhttp sources in $(LLHTTP_DIR) (Debian: node-llhttp); run sudo tools/install-deps)
endif
endif
endif

# The flags the build needs live apart from the user's CFLAGS (Redis's FINAL_CFLAGS), so that
# `make CFLAGS=-O0` changes the optimisation and nothing else. WERROR=0 for a newer compiler.
CFLAGS ?= -g -O2
WERROR ?= 1
SL_CFLAGS := -std=gnu11 -D_GNU_SOURCE -fno-strict-aliasing -Wall -Wextra \
	-Wno-format-truncation -Wno-unknown-warning-option $(if $(filter 1,$(WERROR)),-Werror)
SL_CPPFLAGS := -I$(OBJ) -Ibpf -Iuserspace -I$(LLHTTP_INC) $(PKG_CFLAGS)
SL_LDLIBS := $(PKG_LIBS) -lelf -lz -lpthread -lm
# make SANITIZE=address,undefined: every C binary built with those sanitizers
ifneq ($(SANITIZE),)
SL_CFLAGS += -fsanitize=$(SANITIZE) -fno-omit-frame-pointer
# GCC's object-size warnings misread the instrumented code (a false -Warray-bounds in
# tests/unit/test_envfile.c): they hold in the plain build.
SL_CFLAGS += -Wno-array-bounds -Wno-stringop-overflow
SL_LDLIBS += -fsanitize=$(SANITIZE)
endif
ALL_CFLAGS = $(SL_CPPFLAGS) $(CPPFLAGS) $(SL_CFLAGS) $(CFLAGS)
ALL_LDLIBS = $(SL_LDLIBS) $(LDLIBS)
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
# tests/bpf: BPF programs that exist only for the unit tests (kernel selftests' progs/)
TEST_BPF_SRCS := $(wildcard tests/bpf/*.bpf.c)
SKELS := $(patsubst bpf/%.bpf.c,$(OBJ)/%.skel.h,$(BPF_SRCS))
TEST_SKELS := $(patsubst tests/bpf/%.bpf.c,$(OBJ)/%.skel.h,$(TEST_BPF_SRCS))
# userspace/<subsystem>/*.c, basenames unique across the tree (checked below), objects flat
# in $(OBJ)/; ARCHITECTURE.md names the subsystems and their layers.
US_DIRS := $(sort $(dir $(wildcard userspace/*/*.c)))
LIB_SRCS := $(wildcard userspace/*/*.c)
LIB_OBJS := $(patsubst %.c,$(OBJ)/%.o,$(notdir $(LIB_SRCS)))
US_HDRS := $(wildcard userspace/*/*.h)
ifneq ($(words $(LIB_OBJS)),$(words $(sort $(LIB_OBJS))))
$(error two files under userspace/ share a basename: objects are flat in $(OBJ))
endif
vpath %.c userspace $(US_DIRS)
LLHTTP_OBJS := $(patsubst $(LLHTTP_DIR)/%.c,$(OBJ)/llhttp/%.o,$(wildcard $(LLHTTP_DIR)/*.c))
UNIT_SRCS := $(wildcard tests/unit/test_*.c)
UNIT_BINS := $(patsubst tests/unit/%.c,$(OUTPUT)/tests/%,$(UNIT_SRCS))
BENCH_BINS := $(patsubst tests/bench/%.c,$(OUTPUT)/bench/%,$(wildcard tests/bench/*.c))

.DELETE_ON_ERROR:
# Skeletons and BPF objects are intermediates of several targets: keep them.
.SECONDARY:
.PHONY: all test unit e2e bench demo install clean fuzz fuzz-build fuzz-replay format-check format FORCE

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

$(OBJ)/%.bpf.o: tests/bpf/%.bpf.c $(wildcard tests/bpf/*.h) $(BPF_HDRS) vmlinux.h | $(OBJ)
	$(call msg,BPF,$@)
	$(Q)$(CLANG) $(BPF_CFLAGS) -Itests/bpf -c $< -o $@

$(OBJ)/%.skel.h: $(OBJ)/%.bpf.o
	$(call msg,GEN-SKEL,$@)
	$(Q)$(BPFTOOL) gen skeleton $< name $(subst -,_,$*)_bpf > $@

$(OBJ)/llhttp/%.o: $(LLHTTP_DIR)/%.c | $(OBJ)/llhttp
	$(call msg,CC,$@)
	$(Q)$(CC) -g -O2 -fPIC -DLLHTTP_STRICT_MODE=1 -I$(LLHTTP_INC) -c $< -o $@

$(OBJ)/%.o: %.c $(US_HDRS) $(BPF_HDRS) $(SKELS) | $(OBJ)
	$(call msg,CC,$@)
	$(Q)$(CC) $(ALL_CFLAGS) -c $< -o $@

$(OBJ)/libsluice.a: $(LIB_OBJS) $(LLHTTP_OBJS)
	$(call msg,AR,$@)
	$(Q)rm -f $@ && ar rcs $@ $^

$(OUTPUT)/sluiced: $(OBJ)/main.o $(OBJ)/libsluice.a
	$(call msg,LINK,$@)
	$(Q)$(CC) $(SL_CFLAGS) $(CFLAGS) $^ $(ALL_LDLIBS) -o $@

# The CLI is tools/cli/: every .c there is one binary, sluice (one command object a file).
CLI_SRCS := $(wildcard tools/cli/*.c)
CLI_HDRS := $(wildcard tools/cli/*.h)

$(OUTPUT)/sluice: $(CLI_SRCS) $(CLI_HDRS) $(OBJ)/libsluice.a $(US_HDRS)
	$(call msg,CC,$@)
	$(Q)$(CC) $(ALL_CFLAGS) $(CLI_SRCS) $(OBJ)/libsluice.a $(ALL_LDLIBS) -lseccomp -o $@

$(OUTPUT)/tests/%: tests/unit/%.c $(OBJ)/libsluice.a $(SKELS) $(TEST_SKELS) $(US_HDRS) | $(OUTPUT)/tests
	$(call msg,CC,$@)
	$(Q)$(CC) $(ALL_CFLAGS) -Itests/bpf $< $(OBJ)/libsluice.a $(ALL_LDLIBS) -lcmocka -o $@

$(OUTPUT)/bench/%: tests/bench/%.c $(OBJ)/libsluice.a $(SKELS) $(TEST_SKELS) $(US_HDRS) | $(OUTPUT)/bench
	$(call msg,CC,$@)
	$(Q)$(CC) $(ALL_CFLAGS) -Itests/bpf $< $(OBJ)/libsluice.a $(ALL_LDLIBS) -o $@

unit: $(UNIT_BINS)
	$(Q)set -e; for t in $(UNIT_BINS); do echo "== $$t"; $$t; done

# The tests take their binaries from SLUICE_BUILD; SLUICE_SAN makes them check every
# sluiced they ran for sanitizer reports (tests/e2e/conftest.py).
e2e: all $(BENCH_BINS)
	$(Q)SLUICE_BUILD=$(abspath $(OUTPUT)) SLUICE_SAN=$(SANITIZE) $(PYTEST) -q tests/e2e

# One after the other even under `make -j`: the unit tests need root, network namespaces and
# BPF, and the e2e suite is timing-sensitive; neither may share the machine with the other.
test: all
	$(Q)tools/check-layers
	$(Q)$(MAKE) --no-print-directory unit
	$(Q)$(MAKE) --no-print-directory fuzz-replay
	$(Q)$(MAKE) --no-print-directory e2e

# Writes tests/bench/results/latest.{json,md} and *.svg. BENCH_ARGS: --smoke, or sections
# (connect scale dns https transfer mint); tests/e2e/test_bench_smoke.py runs --smoke.
bench: all $(BENCH_BINS)
	$(Q)/usr/bin/python3 tests/bench/run.py $(BENCH_ARGS)

demo: all
	$(Q)tools/demo

# make install [DESTDIR=...] [PREFIX=/usr/local]: the binaries, sluiced's systemd unit, the OCI
# hook's hooks.d file (Podman and CRI-O read /etc/containers/oci/hooks.d), the hook's policy
# directory (empty) and the example policies. Paths in the unit and hook are the installed ones.
SYSCONFDIR ?= $(if $(filter /usr,$(PREFIX)),/etc,$(if $(filter /usr/local,$(PREFIX)),/etc,$(PREFIX)/etc))
BINDIR ?= $(PREFIX)/bin
SBINDIR ?= $(PREFIX)/sbin
DATADIR ?= $(PREFIX)/share
DOCDIR ?= $(DATADIR)/doc/sluice
UNITDIR ?= $(PREFIX)/lib/systemd/system
HOOKSDIR ?= $(SYSCONFDIR)/containers/oci/hooks.d
INSTALL_SUBST = sed -e 's|@BINDIR@|$(BINDIR)|g' -e 's|@SBINDIR@|$(SBINDIR)|g' \
	-e 's|@SYSCONFDIR@|$(SYSCONFDIR)|g' -e 's|@DOCDIR@|$(DOCDIR)|g'

install: all
	install -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(SBINDIR) $(DESTDIR)$(UNITDIR) \
		$(DESTDIR)$(HOOKSDIR) $(DESTDIR)$(DATADIR)/sluice/policies $(DESTDIR)$(DOCDIR)
	install -d -m 0755 $(DESTDIR)$(SYSCONFDIR)/sluice/policies
	install -m 0755 $(OUTPUT)/sluice $(DESTDIR)$(BINDIR)/sluice
	install -m 0755 $(OUTPUT)/sluiced $(DESTDIR)$(SBINDIR)/sluiced
	$(INSTALL_SUBST) deploy/systemd/sluiced.service.in > $(DESTDIR)$(UNITDIR)/sluiced.service
	chmod 0644 $(DESTDIR)$(UNITDIR)/sluiced.service
	$(INSTALL_SUBST) deploy/oci/sluice-hook.json.in > $(DESTDIR)$(HOOKSDIR)/sluice.json
	chmod 0644 $(DESTDIR)$(HOOKSDIR)/sluice.json
	install -m 0644 lua/examples/*.lua $(DESTDIR)$(DATADIR)/sluice/policies/
	install -m 0644 README.md $(DESTDIR)$(DOCDIR)/README.md

# make format-check: every tracked C source against .clang-format (the kernel's settings at
# 100 columns), nothing rewritten; a difference fails with the file and line. vmlinux.h is
# generated, not written.
CLANG_FORMAT ?= clang-format
FORMAT_SRCS = $(shell git ls-files '*.c' '*.h' | grep -v '^vmlinux\.h$$')
format-check:
	$(Q)$(CLANG_FORMAT) --dry-run -Werror $(FORMAT_SRCS)
# make format: rewrites them in place (what a change runs before it is committed).
format:
	$(Q)$(CLANG_FORMAT) -i $(FORMAT_SRCS)

clean:
	rm -rf $(OUTPUT)

include tests/fuzz/fuzz.mk

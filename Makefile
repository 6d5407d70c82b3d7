# Makefile - builds opensandbox-bridge and opensandboxd, runs the demo and the tests.
#   make            build/opensandbox-bridge, build/opensandboxd
#   make SAN=1      the same with ASan + UBSan, into build/asan/
#   make deps       install the Debian packages and the tests' npm packages (idempotent)
#   make demo       the seed's quick start through the bridge
#                   (URL=http://host:8080 [GRPC_PORT=50051] for a server)
#   make test       unit + end-to-end tests, normal and sanitizer builds
#   make install    PREFIX=/usr/local DESTDIR=
#   make vsix       build/opensandbox-vscode-VERSION.vsix (the VS Code extension, offline)

PREFIX ?= /usr/local
DESTDIR ?=
CC ?= cc
PKGS := grpc json-c libcurl libprotobuf-c libmicrohttpd libseccomp
DEB_PKGS := build-essential pkg-config libjson-c-dev libcurl4-openssl-dev libgrpc-dev \
	libprotobuf-c-dev protobuf-c-compiler libmicrohttpd-dev python3 python3-jsonschema \
	python3-pytest python3-grpcio python3-protobuf python3-grpc-tools valgrind \
	clang libclang-rt-14-dev nodejs libseccomp-dev slirp4netns iproute2 haproxy openssl neovim
# editors/emacs: its ERT suite, byte-compilation and package-lint (tests/e2e/test_editor_emacs.py)
DEB_PKGS += emacs-nox elpa-package-lint

ifeq ($(SAN),1)
BUILD ?= build/asan
SANFLAGS := -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
OPT := -O1 -g
else
BUILD ?= build
SANFLAGS :=
OPT := -O2 -g
endif

# V=1 shows the full commands.
ifeq ($(V),1)
Q :=
else
Q := @
endif

PKG_CFLAGS = $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS = $(shell pkg-config --libs $(PKGS) 2>/dev/null)
CFLAGS_ALL := -std=gnu11 $(OPT) -Wall -Wextra -Werror -Wno-unused-parameter \
	-Wmissing-prototypes -Wstrict-prototypes -D_GNU_SOURCE \
	-pthread $(SANFLAGS) -I$(BUILD)/gen -Isrc $(PKG_CFLAGS) $(CFLAGS)
LDFLAGS_ALL := -pthread $(SANFLAGS) $(LDFLAGS)
LIBS_ALL = $(PKG_LIBS) -lm

# sandbox.proto: the public wire (WIRE.md); sandbox_ext.proto: opensandboxd's extension.
PROTOS := sandbox sandbox_ext
GEN := $(patsubst %,$(BUILD)/gen/%.pb-c.c,$(PROTOS))
GEN_H := $(patsubst %,$(BUILD)/gen/%.pb-c.h,$(PROTOS))

COMMON_SRC := $(wildcard src/common/*.c)
ENGINE_SRC := $(wildcard src/engine/*.c)
RPC_SRC := $(wildcard src/rpc/*.c)
MCP_SRC := $(wildcard src/mcp/*.c)
BRIDGE_SRC := $(filter-out src/bridge/main.c,$(wildcard src/bridge/*.c src/bridge/*/*.c))
SERVER_SRC := $(filter-out src/server/main.c,$(wildcard src/server/*.c))

obj = $(patsubst %.c,$(BUILD)/obj/%.o,$(1))
LIB_OBJ := $(call obj,$(COMMON_SRC) $(ENGINE_SRC) $(RPC_SRC) $(MCP_SRC) $(BRIDGE_SRC) $(SERVER_SRC)) \
	$(patsubst %,$(BUILD)/obj/gen/%.pb-c.o,$(PROTOS))
LIB := $(BUILD)/libosb.a

BRIDGE_BIN := $(BUILD)/opensandbox-bridge
SERVER_BIN := $(BUILD)/opensandboxd
UNIT_SRC := $(wildcard tests/unit/test_*.c)
UNIT_BIN := $(patsubst tests/unit/%.c,$(BUILD)/tests/%,$(UNIT_SRC))
TOOL_SRC := $(wildcard bench/*.c)
TOOL_BIN := $(patsubst %.c,$(BUILD)/tools/%,$(notdir $(TOOL_SRC)))

# The VS Code extension (editors/vscode): TypeScript type-checked and compiled by tsc; its
# npm packages come from the committed lockfile through `npm ci` in `make deps`.
VSCODE_DIR := editors/vscode
VSCODE_OUT := $(VSCODE_DIR)/out/extension.js
VSCODE_SRC := $(wildcard $(VSCODE_DIR)/src/*.ts $(VSCODE_DIR)/src/*/*.ts)
VSCODE_VERSION = $(shell node -p 'require("./$(VSCODE_DIR)/package.json").version' 2>/dev/null)
VSIX = build/opensandbox-vscode-$(VSCODE_VERSION).vsix

.PHONY: all deps node-deps demo test test-unit test-e2e clean install sanitize fuzz bench vsix
all: $(BRIDGE_BIN) $(SERVER_BIN) $(UNIT_BIN) $(TOOL_BIN) $(VSCODE_OUT)

$(VSCODE_OUT): $(VSCODE_SRC) $(VSCODE_DIR)/tsconfig.json $(VSCODE_DIR)/package-lock.json
	@test -x $(VSCODE_DIR)/node_modules/.bin/tsc || { echo "$(VSCODE_DIR)/node_modules is missing: run 'make deps'"; exit 1; }
	@echo "  TSC     $(VSCODE_DIR)"
	$(Q)cd $(VSCODE_DIR) && rm -rf out && node_modules/.bin/tsc -p .

vsix: $(VSCODE_OUT)
	@mkdir -p build
	$(Q)cd $(VSCODE_DIR) && node_modules/.bin/vsce package --allow-missing-repository --skip-license \
		-o ../../$(VSIX)

$(BUILD)/gen/%.pb-c.c $(BUILD)/gen/%.pb-c.h: proto/%.proto
	@mkdir -p $(BUILD)/gen
	@echo "  PROTOC  $<"
	$(Q)protoc-c --proto_path=proto --c_out=$(BUILD)/gen $<

$(BUILD)/obj/gen/%.pb-c.o: $(BUILD)/gen/%.pb-c.c $(GEN_H)
	@mkdir -p $(dir $@)
	@echo "  CC      $<"
	$(Q)$(CC) $(CFLAGS_ALL) -c $< -o $@

$(BUILD)/obj/%.o: %.c $(GEN_H)
	@mkdir -p $(dir $@)
	@echo "  CC      $<"
	$(Q)$(CC) $(CFLAGS_ALL) -MMD -MP -c $< -o $@

$(BUILD)/obj/src/bridge/openrpc_embed.o: schema/openrpc.json

$(LIB): $(LIB_OBJ)
	@rm -f $@
	$(Q)ar rcs $@ $^

$(BRIDGE_BIN): $(BUILD)/obj/src/bridge/main.o $(LIB)
	@echo "  LINK    $@"
	$(Q)$(CC) $(LDFLAGS_ALL) -o $@ $^ $(LIBS_ALL)

$(SERVER_BIN): $(BUILD)/obj/src/server/main.o $(LIB)
	@echo "  LINK    $@"
	$(Q)$(CC) $(LDFLAGS_ALL) -o $@ $^ $(LIBS_ALL)

$(BUILD)/tests/%: $(BUILD)/obj/tests/unit/%.o $(LIB)
	@mkdir -p $(dir $@)
	@echo "  LINK    $@"
	$(Q)$(CC) $(LDFLAGS_ALL) -o $@ $^ $(LIBS_ALL)

$(BUILD)/tools/%: $(BUILD)/obj/bench/%.o $(LIB)
	@mkdir -p $(dir $@)
	@echo "  LINK    $@"
	$(Q)$(CC) $(LDFLAGS_ALL) -o $@ $^ $(LIBS_ALL)

-include $(shell find $(BUILD)/obj -name '*.d' 2>/dev/null)

# Keep objects of test and tool programs (make would delete them as intermediates).
.SECONDARY:

sanitize:
	$(MAKE) SAN=1 all

# Fuzzing (libFuzzer, clang) and benchmarks: see tests/fuzz/ and bench/README.md.
FUZZ_SECONDS ?= 60
fuzz:
	tests/fuzz/run.sh $(FUZZ_SECONDS)

bench: all
	bench/run.sh

deps:
	@missing=""; for p in $(DEB_PKGS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if [ "$$(id -u)" != 0 ]; then echo "missing Debian packages:$$missing (run 'sudo make deps')"; exit 1; fi; \
	echo "installing:$$missing"; \
	apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$missing
	@cmp -s $(VSCODE_DIR)/package-lock.json $(VSCODE_DIR)/node_modules/.osb-lock 2>/dev/null || \
		(cd $(VSCODE_DIR) && npm ci --no-audit --no-fund --loglevel=error && cp package-lock.json node_modules/.osb-lock)
	@$(MAKE) --no-print-directory node-deps

# npm packages the tests use (official client libraries), from the committed lockfiles;
# installed again only when a lockfile changed.
NODE_DIRS := tests/mcp
node-deps:
	@for d in $(NODE_DIRS); do \
	  if [ ! -f $$d/node_modules/.package-lock.json ] || \
	     [ $$d/package-lock.json -nt $$d/node_modules/.package-lock.json ]; then \
	    command -v npm >/dev/null || { echo "npm is missing (Debian: nodejs)"; exit 1; }; \
	    echo "npm ci in $$d"; (cd $$d && npm ci --no-audit --no-fund --loglevel=error) || exit 1; \
	  fi; \
	done

URL ?=
GRPC_PORT ?=
demo:
	@$(MAKE) --no-print-directory deps
	@$(MAKE) --no-print-directory all
	/usr/bin/python3 tests/demo.py --bridge $(BRIDGE_BIN) $(if $(URL),--url $(URL)) \
		$(if $(GRPC_PORT),--grpc-port $(GRPC_PORT))

test:
	@$(MAKE) --no-print-directory deps
	@$(MAKE) --no-print-directory all
	@$(MAKE) --no-print-directory SAN=1 all
	tests/run --build $(BUILD) --san-build build/asan

test-unit: all
	tests/run --build $(BUILD) --only unit

test-e2e: all
	tests/run --build $(BUILD) --only e2e

install: $(BRIDGE_BIN) $(SERVER_BIN)
	install -d $(DESTDIR)$(PREFIX)/bin
	install -m 0755 $(BRIDGE_BIN) $(SERVER_BIN) $(DESTDIR)$(PREFIX)/bin/

clean:
	rm -rf build $(VSCODE_DIR)/out

# For helpers and scripts: the flags the build uses.
print-cflags:
	@echo $(CFLAGS_ALL)
print-libs:
	@echo $(LDFLAGS_ALL) $(LIBS_ALL)

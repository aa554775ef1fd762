# smtpgate's build, test and demo.
#
#   make deps    install what the tests need (postfix, swaks, haproxy, redis-server, python3-dkim; Debian/Ubuntu, as root)
#                and fetch the Exim and OpenSMTPD packages they run into a cache
#                (integration/mta.sh fetch; never installed)
#   make build   bin/smtpgate
#   make test    deps, go vet, gofmt check, go test -race, also of the vendored go-smtp (what CI runs)
#   make demo    deps, build, then integration/demo.sh against a throw-away Postfix
#
# Go itself is not installed here: it must already be on PATH.

SHELL   := /bin/bash
GO      ?= go
BIN     := bin/smtpgate
VERSION := $(shell git describe --tags --always --dirty 2>/dev/null || echo 0.1.0-dev)
LDFLAGS := -X main.version=$(VERSION)

# Go files we own: third_party/ is vendored upstream code.
GOFILES = $(shell find . -name '*.go' -not -path './third_party/*' -not -path './.git/*' | sort)

.PHONY: all deps go-present build test vet fmt-check demo bench soak

all: build

go-present:
	@command -v $(GO) >/dev/null 2>&1 || { \
		echo "error: '$(GO)' not found on PATH." >&2; \
		echo "       Install Go (the version go.mod names) and put its bin directory on PATH," >&2; \
		echo "       e.g. export PATH=\$$PATH:/usr/local/go/bin" >&2; \
		exit 1; }

# deps installs postfix, swaks, haproxy, redis-server and dkimpy (python3-dkim,
# an independent DKIM verifier for the signing test) (and a C compiler, which go test -race
# needs) when they are missing. The system Postfix is installed with "No
# configuration" and is never started: the tests and the demo run their own
# private instances on loopback ports (integration/postfix.sh). Then it
# fetches the Exim and OpenSMTPD packages the tests run (never installed:
# integration/mta.sh unpacks them per test) into their cache, so that a
# failure to fetch them is reported here rather than as a test failure.
deps: go-present
	@set -euo pipefail; \
	have() { command -v "$$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$$1" ]; }; \
	missing=""; \
	have postfix || missing="$$missing postfix"; \
	have swaks || missing="$$missing swaks"; \
	have haproxy || missing="$$missing haproxy"; \
	have redis-server || missing="$$missing redis-server"; \
	have gcc || missing="$$missing gcc libc6-dev"; \
	have unshare || missing="$$missing util-linux"; \
	/usr/bin/python3 -c 'import dkim, nacl' >/dev/null 2>&1 || missing="$$missing python3-dkim python3-nacl"; \
	if [ -z "$$missing" ]; then \
		echo "deps: postfix, swaks, haproxy, redis-server, gcc and dkimpy are installed"; \
	else \
		echo "deps: installing:$$missing"; \
		if [ "$$(id -u)" != 0 ]; then \
			echo "error: missing:$$missing -- run 'make deps' as root, or install them yourself" >&2; \
			exit 1; \
		fi; \
		if ! command -v apt-get >/dev/null 2>&1; then \
			echo "error: missing:$$missing -- no apt-get here (make deps supports Debian/Ubuntu); install them yourself" >&2; \
			exit 1; \
		fi; \
		echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections; \
		rcd=""; \
		if [ ! -e /usr/sbin/policy-rc.d ]; then \
			printf '#!/bin/sh\n# make deps: start no service while installing\nexit 101\n' > /usr/sbin/policy-rc.d; \
			chmod 755 /usr/sbin/policy-rc.d; \
			rcd=1; \
		fi; \
		trap 'if [ -n "$$rcd" ]; then rm -f /usr/sbin/policy-rc.d; fi' EXIT; \
		apt-get update; \
		DEBIAN_FRONTEND=noninteractive apt-get install -y $$missing; \
		if PATH="$$PATH:/usr/sbin" postfix status >/dev/null 2>&1; then \
			echo "deps: stopping the system Postfix that the install started"; \
			PATH="$$PATH:/usr/sbin" postfix stop || true; \
		fi; \
		if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then \
			systemctl disable --now postfix >/dev/null 2>&1 || true; \
			systemctl disable --now redis-server >/dev/null 2>&1 || true; \
		fi; \
	fi; \
	echo "deps: Exim and OpenSMTPD packages for the tests (cached; fetched when missing)"; \
	if ! command -v apt-get >/dev/null 2>&1 || ! bash integration/mta.sh fetch exim opensmtpd; then \
		echo "error: could not fetch the Exim and OpenSMTPD packages that TestMTAMatrix runs (integration/mta.sh fetch, above)." >&2; \
		echo "       Check apt's sources and the network, then run 'make deps' again; outside CI," >&2; \
		echo "       SMTPGATE_SKIP_MTAS=exim,opensmtpd skips those MTAs in the tests." >&2; \
		exit 1; \
	fi; \
	echo "deps: done"

build: go-present
	$(GO) build -ldflags "$(LDFLAGS)" -o $(BIN) ./cmd/smtpgate

vet: go-present
	$(GO) vet ./...

fmt-check: go-present
	@bad=$$("$$($(GO) env GOROOT)/bin/gofmt" -l $(GOFILES)); \
	if [ -n "$$bad" ]; then \
		echo "gofmt: these files are not formatted (run: gofmt -w FILE):" >&2; \
		echo "$$bad" | sed 's/^/  /' >&2; \
		exit 1; \
	fi; \
	echo "gofmt: ok"

# The test command: the README and CI (.ci/run) run exactly `make test`.
# The vendored go-smtp is a module of its own, so ./... leaves it out: its
# tests (with those of our patches, PATCHES.md) run here too.
test: deps vet fmt-check
	$(GO) test -race -count=1 ./...
	cd third_party/go-smtp && $(GO) test -race -count=1 ./...

demo: deps build
	bash integration/demo.sh

# bench runs smtp-source against smtp-sink directly, through smtpgate and
# through Postfix as a before-queue proxy, alternating, and prints a
# Markdown table (about 10 minutes; FULL=1 for
# the long version). See docs/performance.md.
bench: deps
	bash integration/bench/run.sh

# soak runs a mixed load for DURATION (default 30m; QUICK=1: 2 minutes)
# and plots RSS, goroutines and open files to an SVG.
soak: deps
	bash integration/bench/soak.sh

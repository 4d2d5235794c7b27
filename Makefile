# oevpn — build, test, benchmark, fuzz, demo.
GO       ?= go
VERSION  := $(shell git describe --tags --always --dirty 2>/dev/null || echo devel)
LDFLAGS  := -s -w -X main.version=$(VERSION)
FUZZTIME ?= 30s
PKGS     := ./...
export CGO_ENABLED := 0
SHELL    := /bin/bash
.SHELLFLAGS := -o pipefail -c

.PHONY: all build test tidy-check fmt-check vet unit e2e lab cross bench bench-esp bench-crypt bench-ike bench-scale bench-netstack bench-lab bench-compare soak fuzz demo lab-deps clean

all: build

## build: bin/oevpn, static, version stamped from git
build:
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o bin/oevpn ./cmd/oevpn

## man: the manual page oevpn(8), generated from the help text, in build/man
.PHONY: man
man:
	mkdir -p build/man
	$(GO) run -ldflags '-X main.version=$(VERSION)' ./cmd/oevpn help --man > build/man/oevpn.8

## test: everything CI runs
test: fmt-check tidy-check vet unit e2e lab cross
	@echo "make test: all checks passed"

fmt-check:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

tidy-check:
	$(GO) mod tidy -diff

vet:
	$(GO) vet $(PKGS)

# Unit tests under the race detector (it needs cgo); the lab tests run in
# their own step below.
unit:
	CGO_ENABLED=1 $(GO) test -race -count=1 -skip '^TestLab' $(PKGS)

# The in-process end-to-end tests at full size (100 MB TCP), and the
# allocation tests that the race detector's own allocations skip in unit,
# without -race.
e2e:
	$(GO) test -count=1 -run 'TestNetstack' -v ./tunnel | grep -E '^(=== RUN|--- |PASS|FAIL|ok)|MB in' 
	$(GO) test -count=1 -run 'Alloc' ./esp ./tunnel ./internal/...

# Lab tests: root, network namespaces, TUN, iperf3, tcpdump. They skip with
# a message when those are missing, unless OEVPN_LAB=required (CI).
lab:
	$(GO) test -count=1 -p 1 -run '^TestLab' -v $(PKGS) 2>&1 | grep -v 'no tests to run'

cross:
	@for os in linux darwin windows; do for arch in amd64 arm64; do \
		echo "build $$os/$$arch"; GOOS=$$os GOARCH=$$arch $(GO) build -o /dev/null $(PKGS) || exit 1; \
	done; done

## bench: ESP vs raw AEAD table, IKE, scale, netstack TCP, then the lab tunnel vs veth iperf3 figures
bench: bench-esp bench-crypt bench-ike bench-scale bench-netstack bench-lab

# ESP against the raw AEAD, internal/gcm beside crypto/cipher and
# internal/chachapoly beside x/crypto, then the
# device's super-packets cut into segments and the checksum (Sum, CopyAdd
# beside a plain copy).
bench-esp:
	$(GO) test -run '^$$' -bench 'Seal|Open' -benchmem -benchtime 1s -count 3 ./esp | $(GO) run ./internal/tools/benchtable
	$(GO) test -run '^$$' -bench 'Seal|Open' -benchtime 1s -count 3 ./internal/gcm | grep -E '^Benchmark|^ok|FAIL'
	$(GO) test -run '^$$' -bench 'Seal|Open|Poly' -benchtime 1s -count 3 ./internal/chachapoly | grep -E '^Benchmark|^ok|FAIL'
	$(GO) test -run '^$$' -bench 'Segment' -count 3 ./tunnel | grep -E '^Benchmark|^ok|FAIL'
	$(GO) test -run '^$$' -bench 'Sum' -count 3 ./internal/ipview | grep -E '^Benchmark|^ok|FAIL'

# Parallel crypto: one SA's batches sealed with helpers at GOMAXPROCS 1, 2
# and 4 (a core taken to be spare), then the in-process datapath (two
# engines over loopback) with helpers taking part and without.
bench-crypt:
	$(GO) test -run '^$$' -bench 'CryptWorkers|DatapathHelpers' -count 3 ./tunnel | grep -E '^Benchmark|^ok|FAIL'

# IKE: full handshakes per second (X25519 + Ed25519, both ends in this
# process) with no other SA and with 10,000 other SA pairs installed, the
# heap per peer (B/peer: IKE SAs and Child SA pairs at both ends), and
# first-packet latency through an on-demand SA.
bench-ike:
	$(GO) test -run '^$$' -bench 'Handshake|FirstPacket' -benchtime 3000x -count 3 ./tunnel | grep -E '^Benchmark|^ok|FAIL'

# Scale, at 1, 1,000, 10,000 and 100,000 SA pairs: SPI table updates and
# lookups; installing and removing a pair (ns/install, ns/remove) and the
# heap per pair (B/pair); per packet, route lookup + Seal and SPI lookup +
# Open, to host and to /30 subnet selectors; then the cost at the largest
# size against one pair (the bar: 2x), timed in turns so that a loaded
# machine weighs on both alike. OEVPN_BENCH_MAX caps the sizes.
bench-scale:
	$(GO) test -run '^$$' -bench 'Table' -benchtime 200000x ./esp | grep -E '^Benchmark|^ok|FAIL'
	$(GO) test -run '^$$' -bench 'ScaleInstall' -benchtime 1000x -count 3 ./tunnel | grep -E '^Benchmark|^ok|FAIL'
	$(GO) test -run '^$$' -bench 'ScalePacket' -benchtime 200000x -count 3 ./tunnel | grep -E '^Benchmark|^ok|FAIL'
	$(GO) test -run '^$$' -bench 'ScaleRatio' -benchtime 1x ./tunnel | grep -E '^Benchmark|^ok|FAIL'

# Userspace mode: one TCP stream between two netstack nodes in this process,
# through ESP over loopback UDP, in Gbit/s and per CPU-second of the process
# (less sensitive to other load on the machine); no root needed.
bench-netstack:
	$(GO) test -run '^$$' -bench 'NetstackTCP' -benchtime 3s -count 3 ./tunnel | $(GO) run ./internal/tools/benchtable

bench-lab:
	OEVPN_BENCH=1 $(GO) test -count=1 -run '^TestLabBench$$' -v -timeout 20m ./cmd/oevpn

## bench-compare: oevpn beside wireguard-go (its device package, defaults) and
## the bare veth in one namespace pair, interleaved: iperf3 with 1, 2 and 4
## streams, ping, CPU seconds per GB at 1 Gbit/s offered; with offloads on
## and off and at MTU 1500 and 9000. Root and make lab-deps; ROUNDS runs of
## 10 s per figure (default 3: about 30 minutes). A benchmark: it prints a
## table and fails nothing.
ROUNDS ?= 3
bench-compare:
	OEVPN_BENCH_COMPARE=1 OEVPN_BENCH_ROUNDS=$(ROUNDS) $(GO) test -count=1 -run '^TestLabBenchCompare' -v -timeout 60m ./cmd/oevpn \
		| grep -v -E '^\s+time=|^=== RUN|^--- (PASS|SKIP)'

## soak: two endpoints in this process, rekeying every 10 s under traffic,
## for SOAK (default 2m; e.g. make soak SOAK=30m); not part of make test
SOAK ?= 2m
soak:
	OEVPN_SOAK=$(SOAK) $(GO) test -count=1 -run '^TestSoak$$' -v -timeout 0 ./tunnel

## fuzz: every fuzz target for FUZZTIME each
fuzz:
	@for pkg in $$($(GO) list $(PKGS)); do \
		for t in $$($(GO) test -list '^Fuzz' $$pkg | grep '^Fuzz'); do \
			echo "fuzz $$pkg $$t ($(FUZZTIME))"; \
			$(GO) test -run '^$$' -fuzz "^$$t$$" -fuzztime $(FUZZTIME) $$pkg || exit 1; \
		done; \
	done

## demo: opportunism from signed DNS, policy, AutoVPN, SOCKS5, in one unprivileged process
demo: build
	./bin/oevpn demo

## lab-deps: the Debian packages the lab tests need
lab-deps:
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends iproute2 iperf3 tcpdump iputils-ping procps charon-systemd strongswan-swanctl libstrongswan-standard-plugins libcharon-extra-plugins knot unbound ldnsutils nftables curl systemd util-linux ethtool groff-base bash zsh fish >/dev/null

clean:
	rm -rf bin

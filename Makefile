# theater-storefs: build, test, benchmark, fuzz and demo.
#
#   make            build the binary ./theater-storefs
#   make mount      build, install fuse3 if missing, create the store if absent, mount it at ./mnt
#   make unmount    unmount ./mnt
#   make test       go vet, then every test with the race detector
#   make bench      the store and bucket benchmarks, the group commit figure, and bench-mount
#   make bench-mount the mount against the same work on the store's files (root, /dev/fuse)
#   make bench-journal the group commit figure on an ext4 with a journal, on a loop device (root)
#   make fuzz       each fuzz target of store/ for $(FUZZ_TIME)
#   make soak       the long crash loop, concurrency soak and power cuts (root, /dev/fuse, loop devices)
#   make demo       a walk through the CLI on a scratch store
#   make man        the man page docs/theater-storefs.1, from the command definitions
#   make clean      remove what the targets above leave behind
#
# Each target is self-contained; add new ones below and to .PHONY.

SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := build

GO     ?= go
BINARY := theater-storefs

# Benchmarks: override on the command line, e.g. make bench BENCH_TIME=3s.
BENCH       ?= .
BENCH_PKGS  ?= ./store/ ./store/remote/ ./integration/
BENCH_TIME  ?= 1s
BENCH_COUNT ?= 5
# Where the benchmark stores go: a real disk, never tmpfs (fsync would be
# free). make bench makes a fresh directory inside and removes only that.
BENCH_DIR   ?= $(CURDIR)/bench/out
BENCH_OUT   := bench/out/bench.txt
# The mount benchmark keeps its generated stores (up to a million blobs) in
# $(BENCH_DIR)/mountbench between runs. A quick run:
#   make bench-mount MOUNTBENCH_FLAGS='-size 64MiB -small 1000 -many 10000 -million 20000'
MOUNTBENCH_FLAGS ?=
MOUNTBENCH_OUT   := bench/out/mountbench.txt

FUZZ_PKGS ?= ./store/
FUZZ_TIME ?= 20s

DEMO_STORE := .theater/demo-store

# make mount: Theater's default store unless told otherwise.
STORE ?= $(or $(THEATER_STORE),$(if $(THEATER_HOME),$(THEATER_HOME)/store),$(HOME)/.theater/store)
MNT   ?= $(CURDIR)/mnt

.PHONY: build mount unmount install test bench bench-mount bench-journal fuzz soak demo clean

build:
	$(GO) build -o $(BINARY) .

# Returns once the mount answers; the server runs in the background.
mount: build
	@command -v fusermount3 >/dev/null 2>&1 || { \
		echo "installing fuse3"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq fuse3; }
	@mkdir -p '$(STORE)' '$(MNT)'
	./$(BINARY) --store '$(STORE)' mount '$(MNT)'
	@echo "mounted $(STORE) at $(MNT); try: ls $(MNT)/by-label; unmount with: make unmount"

unmount:
	./$(BINARY) unmount '$(MNT)'

# For systemd units and /etc/fstab (see README).
install: build
	install -m 0755 $(BINARY) /usr/local/bin/$(BINARY)

# The packages, named so that no pattern walks into ./mnt (a mount) or
# bench/out (stores of a million blobs).
PKGS := . ./store/... ./fs/... ./internal/... ./integration/... ./bench/benchsummary/... ./bench/mountbench/...

test:
	$(GO) vet $(PKGS)
	$(GO) test -race -count=1 -timeout 9m $(PKGS)
	@echo "a short run of every fuzz target:"
	@# A count, not a duration: Go 1.26's fuzzer can fail a run whose
	@# -fuzztime duration ends as a worker is busy ("context deadline
	@# exceeded", golang/go#75804, fixed in Go 1.27); a count never ends so.
	@$(MAKE) --no-print-directory fuzz FUZZ_TIME=30000x

# The stores stay in place until every benchmark has run (BENCH_KEEP=1):
# deleting them between runs would slow the file creates of the next run on
# some file systems (see store/bench_test.go).
bench:
	@mkdir -p '$(BENCH_DIR)' bench/out
	@dir=$$(mktemp -d '$(BENCH_DIR)/stores.XXXXXX'); status=0; \
	echo "$(GO) test -run '^\$$' -bench '$(BENCH)' -benchtime $(BENCH_TIME) -count $(BENCH_COUNT) $(BENCH_PKGS)  (stores in $$dir)"; \
	BENCH_DIR="$$dir" BENCH_KEEP=1 $(GO) test -run '^$$' -bench '$(BENCH)' -benchtime $(BENCH_TIME) \
		-count $(BENCH_COUNT) -timeout 60m $(BENCH_PKGS) | tee $(BENCH_OUT) || status=$$?; \
	rm -rf "$$dir"; \
	exit $$status
	@echo
	@$(GO) run ./bench/benchsummary < $(BENCH_OUT)
	@echo
	@$(MAKE) --no-print-directory bench-mount

# Builds the binary afresh, mounts stores made on the real disk, and prints
# each figure beside its baseline, medians of BENCH_COUNT runs.
bench-mount:
	@mkdir -p '$(BENCH_DIR)' bench/out
	$(GO) run ./bench/mountbench -dir '$(BENCH_DIR)/mountbench' -runs $(BENCH_COUNT) $(MOUNTBENCH_FLAGS) | tee $(MOUNTBENCH_OUT)

# The group commit figure on the usual kind of file system, an ext4 with a
# journal, made in a file under BENCH_DIR and mounted on a loop device
# (this VM's own ext4 has none). Both go when it ends.
bench-journal:
	@mkdir -p '$(BENCH_DIR)'
	@img=$$(mktemp '$(BENCH_DIR)/journal.XXXXXX.img'); mnt=$$(mktemp -d); status=0; \
	trap 'umount "$$mnt" 2>/dev/null; rmdir "$$mnt"; rm -f "$$img"' EXIT; \
	truncate -s 4G "$$img"; mkfs.ext4 -q -F -O has_journal "$$img"; mount -o loop "$$img" "$$mnt"; \
	echo "ext4 with a journal on $$(findmnt -n -o SOURCE "$$mnt"), mounted at $$mnt"; \
	BENCH_DIR="$$mnt" $(GO) test -run '^$$' -bench 'GroupCommitPaired' -benchtime $(BENCH_TIME) \
		-count $(BENCH_COUNT) ./store/ | tee bench/out/bench-journal.txt || status=$$?; \
	$(GO) run ./bench/benchsummary < bench/out/bench-journal.txt; \
	exit $$status

fuzz:
	@for pkg in $(FUZZ_PKGS); do \
		list=$$($(GO) test -list '^Fuzz' $$pkg) || { echo "fuzz: cannot list the fuzz targets of $$pkg" >&2; exit 1; }; \
		targets=$$(grep '^Fuzz' <<<"$$list" || true); \
		if [ -z "$$targets" ]; then echo "fuzz: no fuzz targets in $$pkg"; continue; fi; \
		for target in $$targets; do \
			echo "$(GO) test -run '^\$$' -fuzz '^$$target\$$' -fuzztime $(FUZZ_TIME) $$pkg"; \
			$(GO) test -run '^$$' -fuzz "^$$target\$$" -fuzztime $(FUZZ_TIME) $$pkg; \
		done; \
	done

# The long versions of three tests, each printing its figures: the server
# killed 50 times under writers (acknowledged writes lost, torn labels, bad
# blobs), 16 writers for a minute (the server's descriptors and threads
# before and after), and 40 power cuts under writers on a loop-mounted ext4
# of each kind. THEATER_STOREFS_SEED=N replays a run.
soak:
	THEATER_STOREFS_LONG=1 $(GO) test -count=1 -v -timeout 30m -run '^(TestCrashLoop|TestConcurrencySoak)$$' ./integration/
	THEATER_STOREFS_LONG=1 $(GO) test -count=1 -v -timeout 30m -run '^TestPowerLoss$$' ./store/

# Every command is printed before it runs, as a reader would type it.
demo: build
	@rm -rf $(DEMO_STORE)
	@mkdir -p $(dir $(DEMO_STORE))
	@demo() { echo "\$$ $$1"; eval "$$1"; echo; }; \
	export THEATER_STORE=$(DEMO_STORE); \
	echo "# a fresh store in $(DEMO_STORE), named by THEATER_STORE"; echo; \
	demo 'echo "hello from the demo" | ./$(BINARY) put --label demo/greeting'; \
	demo './$(BINARY) put --label demo/files Makefile'; \
	demo './$(BINARY) put --label demo/files go.mod'; \
	demo './$(BINARY) labels'; \
	demo './$(BINARY) refs demo/files'; \
	demo './$(BINARY) get store:demo/greeting'; \
	demo './$(BINARY) ls'; \
	demo './$(BINARY) du'; \
	demo './$(BINARY) fsck'; \
	demo './$(BINARY) get store:demo/files || echo "(exit $$?: demo/files holds two refs)"'

# The page is generated (urfave/cli's ToMan): edit the commands' help texts,
# then run make man again.
man:
	@mkdir -p docs
	$(GO) run . man > docs/theater-storefs.1.tmp
	mv docs/theater-storefs.1.tmp docs/theater-storefs.1

clean:
	rm -f $(BINARY)
	rm -rf bench/out $(DEMO_STORE)

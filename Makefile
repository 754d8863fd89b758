# Thin wrapper over Meson; the README names `make run` and `make test`.
# Any order of make, make run, make test, make bench works on a fresh machine:
# each installs what it needs first (scripts/deps), and scripts/configure
# (re)configures the build directory when the installed packages changed
# since it was configured, so optional benchmark peers installed later
# (libuv, libthrift, ...) are picked up rather than missed or half-built.
BUILD ?= build
.PHONY: all run test unit asan tsan fuzz faults bench clean format deps configure install deb cluster

all: configure
	ninja -C $(BUILD)

configure: deps
	@scripts/configure $(BUILD)

deps:
	@scripts/deps build

# Build and start the reference service in the foreground (Ctrl-C stops it).
# Builds only what it runs, so the first run on a fresh machine is quick.
run: configure
	@ninja -C $(BUILD) examples/notes/knit-notes tools/knit-manhole/knit-manhole
	@scripts/run $(ARGS)

# Install the library (libknit.so.0 and libknit.a), include/knit/, knit.pc
# and the tools under PREFIX (default /usr/local), staged below DESTDIR when
# set (packaging): `make install PREFIX=/opt/knit DESTDIR=/tmp/stage`. Then
# build programs with `pkg-config --cflags --libs knit` (docs/getting-started.md).
# The prefix is a Meson configure option: a different PREFIX reconfigures
# $(BUILD) (no recompilation; only install paths and knit.pc change).
PREFIX ?= /usr/local
DESTDIR ?=
install: configure
	@scripts/install-prefix $(BUILD) "$(PREFIX)"
	ninja -C $(BUILD)
	meson install -C $(BUILD) --no-rebuild $(if $(DESTDIR),--destdir "$(DESTDIR)")

# The whole suite: unit tests (plain, ASan+UBSan, TSan for threaded modules),
# integration tests, short fuzz runs. Ends with "N passed, N failed".
test:
	@scripts/test

# Only the unit tests of the plain build.
unit: all
	@scripts/test --only unit

asan:
	@scripts/test --only asan

tsan:
	@scripts/test --only tsan

# Each libFuzzer target for FUZZ_SECONDS (default 300 here; 6 in `make
# test`), merging the inputs that found new coverage into fuzz/corpus/.
fuzz:
	@FUZZ_SECONDS=$${FUZZ_SECONDS:-300} FUZZ_MERGE=1 scripts/test --only fuzz

# Allocation-failure sweep: every allocation site the unit suite reaches fails
# once (build-fault/, ASan+UBSan); summary in build-fault/faults/summary.md.
faults:
	@scripts/deps test
	@scripts/faults

bench:
	@scripts/deps bench
	@scripts/bench

# Soak (not in CI): SOAK_SECONDS (default 600) of mixed load on knit-notes with 10,000 idle
# connections; prints the samples and the verdict, writes the Soak section of
# docs/robustness.md, exits non-zero when not flat. Knobs: tests/soak/soak.py.
.PHONY: soak
soak: all
	@scripts/deps test
	@tests/soak/soak.py

# The knit-notes Debian package (packaging/debian) into build-deb/, then its
# checks (tests/deb/run: lintian without errors, contents, the packaged
# binary started as systemd starts it). docs/deploy.md.
deb:
	@scripts/deb

# Three knit-notes instances in network namespaces behind HAProxy, sharing
# one database, through a rolling restart and a SIGKILL under load
# (tests/cluster/run; needs root for the namespaces). docs/deploy.md.
cluster: all
	@scripts/deps deploy
	@tests/cluster/run

format:
	clang-format -i $$(git ls-files '*.c' '*.h')

clean:
	rm -rf build build-asan build-tsan build-fuzz build-fault build-deb

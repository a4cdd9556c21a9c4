# softkvm — set up and go.
#   make run   fresh machine -> installs into .venv, builds the guests, boots the demo guest
#   make test  fresh machine -> same install, then the whole test suite
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
BENCH_STAMP := $(VENV)/.bench-installed
ZIGCC  := $(PY) -m ziglang cc
BUILD  := build/guests
SMP    ?= 4

# zig turns -mcpu into an explicit LLVM feature list that overrides -mgeneral-regs-only and
# -mstrict-align, so the features are spelled in zig's -mcpu syntax (from cortex_a72, even
# "-fp_armv8-neon" still leaves FP on; from generic it does not): no FP/SIMD (vararg functions
# would save q0-q7, which traps with CPACR_EL1.FPEN = 0), and strict alignment because with
# the MMU off all data accesses are Device memory.  zig rejects the joined -Wl,-Tfile form.
GUEST_CPU := generic-fp_armv8-neon+strict_align
GUEST_CFLAGS := -target aarch64-freestanding-none -mcpu=$(GUEST_CPU) -O2 -g -std=c11 -ffreestanding \
	-fno-builtin -fno-stack-protector -nostdlib -mgeneral-regs-only \
	-Wall -Wextra -Werror -Iguests/runtime
GUEST_LDFLAGS := -target aarch64-freestanding-none -nostdlib -static -T guests/runtime/guest.ld \
	-Wl,--build-id=none
RUNTIME_SRC := $(wildcard guests/runtime/*.c guests/runtime/*.S)
RUNTIME_HDR := $(wildcard guests/runtime/*.h) guests/runtime/guest.ld
GUESTS := $(patsubst guests/%/main.c,%,$(wildcard guests/*/main.c))
GUEST_ELFS := $(patsubst %,$(BUILD)/%.elf,$(GUESTS))

UNICORN_DEPS := third_party/unicorn/build.py third_party/unicorn/softkvm.patch

LINUX_DIR := build/linux
LINUX_TOOL := ../shared/tools/make-linux-guest.sh

.PHONY: install run test test-fast guests guests-qemu bench linux-guest clean

# softkvm's bytecode is compiled here, not at each start: a shell that sets
# PYTHONDONTWRITEBYTECODE (as this workplace's does) would otherwise compile every module of the
# package again on every `softkvm` run (imports: about 245 -> 135 ms). Only changed files are
# recompiled; a stale .pyc is never used (Python checks the source's mtime).
install: $(STAMP) guests
	$(PY) -m compileall -q src/softkvm

# The core first: Unicorn 2.1.4 from its PyPI source, patched and built for AArch64 only
# (third_party/unicorn/README.md; about a minute), so that softkvm's unicorn==2.1.4 finds it.
$(STAMP): pyproject.toml setup.py $(wildcard src/softkvm/hw/_native/*.[ch]) $(UNICORN_DEPS)
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet cmake
	$(PY) third_party/unicorn/build.py build/unicorn
	$(PY) -m pip install --quiet -e '.[dev,guests]'
	touch $@

guests: $(STAMP) $(GUEST_ELFS)

# Second expansion, so that the wildcard sees the guest's name instead of a literal '%'.
.SECONDEXPANSION:
$(BUILD)/%.elf: guests/%/main.c $$(wildcard guests/$$*/*.c guests/$$*/*.S guests/$$*/*.h) \
		$(RUNTIME_SRC) $(RUNTIME_HDR) Makefile | $(STAMP)
	@mkdir -p $(BUILD)
	$(ZIGCC) $(GUEST_CFLAGS) $(GUEST_LDFLAGS) -o $@ $(RUNTIME_SRC) $(wildcard guests/$*/*.c guests/$*/*.S)

# Reference check of every guest on QEMU (needs qemu-system-aarch64; not a dependency).
guests-qemu: guests
	sh guests/qemu-check.sh

run: install
	$(VENV)/bin/softkvm run --smp $(SMP) $(BUILD)/demo.elf

# The Linux guest (Debian arm64 kernel Image + busybox initramfs, ~60 MB of Debian packages),
# assembled once and cached in build/linux.
linux-guest: $(LINUX_DIR)/Image

$(LINUX_DIR)/Image:
	@test -f $(LINUX_TOOL) || { echo "missing $(LINUX_TOOL): the shared/ folder must sit beside this repository"; exit 1; }
	bash $(LINUX_TOOL) $(LINUX_DIR)

test: install linux-guest $(BENCH_STAMP)
	$(VENV)/bin/pytest -q

test-fast: install
	$(VENV)/bin/pytest -q -m "not slow"

# The benchmark: CPU-bound ceiling, the bench guest in every irqchip set-up (and on QEMU when
# installed), Linux boot times when build/linux exists; results, plots and summary.md in
# bench/results/.  Its plotting dependency (the `bench` extra) is installed on first use; the
# tests install it too, so that the plots are tested.
$(BENCH_STAMP): $(STAMP) pyproject.toml
	$(PY) -m pip install --quiet -e '.[bench]'
	touch $@

bench: install $(BENCH_STAMP)
	$(PY) -m bench

clean:
	rm -rf build $(VENV) src/softkvm/hw/_native/*.so

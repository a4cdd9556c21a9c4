# softkvm — set up and go.
#   make run   fresh machine -> installs into .venv, builds the guests, boots the demo guest
#   make test  fresh machine -> same install, then the whole test suite
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
ZIGCC  := $(PY) -m ziglang cc
BUILD  := build/guests
SMP    ?= 4

GUEST_CFLAGS := -target aarch64-freestanding-none -mcpu=cortex_a72 -O2 -g -ffreestanding \
	-fno-builtin -fno-stack-protector -nostdlib -mgeneral-regs-only -Wall -Wextra -Werror \
	-Iguests/runtime
GUEST_LDFLAGS := -target aarch64-freestanding-none -nostdlib -static -Wl,-Tguests/runtime/guest.ld \
	-Wl,--build-id=none
RUNTIME_SRC := $(wildcard guests/runtime/*.c guests/runtime/*.S)
RUNTIME_HDR := $(wildcard guests/runtime/*.h) guests/runtime/guest.ld
GUESTS := $(patsubst guests/%/main.c,%,$(wildcard guests/*/main.c))
GUEST_ELFS := $(patsubst %,$(BUILD)/%.elf,$(GUESTS))

.PHONY: install run test test-fast guests bench linux-guest clean

install: $(STAMP) guests

$(STAMP): pyproject.toml setup.py src/softkvm/hw/_native/shim.c
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev,guests]'
	touch $@

guests: $(STAMP) $(GUEST_ELFS)

$(BUILD)/%.elf: guests/%/main.c $(wildcard guests/%/*.c guests/%/*.S guests/%/*.h) $(RUNTIME_SRC) $(RUNTIME_HDR) | $(STAMP)
	@mkdir -p $(BUILD)
	$(ZIGCC) $(GUEST_CFLAGS) $(GUEST_LDFLAGS) -o $@ $(RUNTIME_SRC) $(wildcard guests/$*/*.c guests/$*/*.S)

run: install
	$(VENV)/bin/softkvm run --smp $(SMP) $(BUILD)/demo.elf

test: install
	$(VENV)/bin/pytest -q

test-fast: install
	$(VENV)/bin/pytest -q -m "not slow"

bench: install
	$(PY) -m bench

clean:
	rm -rf build $(VENV) src/softkvm/hw/_native/*.so

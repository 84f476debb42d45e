VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install run test lint sipp chromium

# uv installs what pip would, several times faster from a fresh clone (27 s against pip's 200 s
# with an empty cache, measured here): most of `make test`'s first run was the install. It
# compiles the bytecode as pip does: where PYTHONDONTWRITEBYTECODE is set, nothing else would,
# and every process would compile its libraries again (6 s for phonenumbers' geocoder alone).
$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet 'uv>=0.5'
	$(VENV)/bin/uv pip install --python $(PY) --quiet --compile-bytecode -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(VENV)/bin/outdial serve --first-run-hint

# The sip provider's tests run against sipp, a real SIP peer (Debian's sip-tester).
sipp:
	command -v sipp >/dev/null || apt-get install -y -q sip-tester \
		|| (apt-get update -q && apt-get install -y -q sip-tester)

# The dashboard's browser tests drive Debian's chromium through Playwright (no browser download).
chromium:
	command -v chromium >/dev/null || apt-get install -y -q chromium \
		|| (apt-get update -q && apt-get install -y -q chromium)

# The tests' temporary files, their SQLite databases among them, go to memory where there is
# a /dev/shm with 2 GB free: SQLite flushes every commit to disk (synchronous=FULL, ~3 ms a
# commit here), which only a machine's crash could tell from memory, and the tests never crash
# the machine.
TEST_TMPDIR := $(shell [ "$$(df -Pk /dev/shm 2>/dev/null | awk 'NR==2 {print $$4}')" -gt 2000000 ] 2>/dev/null \
	&& echo /dev/shm || echo $${TMPDIR:-/tmp})

# Bytecode is written even where PYTHONDONTWRITEBYTECODE is set: the suite starts dozens of
# processes and two workers, each compiling outdial and rewriting the tests' asserts afresh
# without it (13 % of a run of the CLI and API tests, measured here).
test: $(STAMP) sipp chromium
	$(VENV)/bin/ruff check src tests bench
	PYTHONDONTWRITEBYTECODE= TMPDIR=$(TEST_TMPDIR) $(VENV)/bin/pytest -q -n 2 --dist loadgroup

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/ruff format --check src tests bench

VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install run test lint sipp

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(VENV)/bin/outdial serve --first-run-hint

# The sip provider's tests run against sipp, a real SIP peer (Debian's sip-tester).
sipp:
	command -v sipp >/dev/null || apt-get install -y -q sip-tester \
		|| (apt-get update -q && apt-get install -y -q sip-tester)

test: $(STAMP) sipp
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/pytest -q

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/ruff format --check src tests bench

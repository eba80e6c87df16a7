# Two commands do everything on a fresh machine:
#   make run   - install into .venv and start the dashboard on the built-in sample
#   make test  - install into .venv (with test extras and Chromium when root) and run every test
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: run test pipeline bench install browser

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(VENV)/bin/streamlit run app.py

pipeline: $(STAMP)
	$(VENV)/bin/d3m pipeline

# The browser test drives Debian's Chromium; install it when missing and allowed to.
browser:
	@command -v chromium >/dev/null || { [ "$$(id -u)" = 0 ] && apt-get update -qq && apt-get install -y -qq chromium >/dev/null; } || \
		echo "chromium not installed (needs root): the browser test will be skipped"

test: $(STAMP) browser
	CUDA_VISIBLE_DEVICES= $(PY) -m pytest

bench: $(STAMP)
	$(PY) -m benchmarks.debias

# Front door: `make bench` and `make test`. Each target is one call to the CLI;
# the only rule with logic is the virtualenv, rebuilt when pyproject.toml changes.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: bench quick test report notebook clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

bench: $(STAMP)
	$(PY) -m bench bench --profile default

quick: $(STAMP)
	$(PY) -m bench bench --profile quick

test: $(STAMP)
	$(PY) -m pytest -q

report: $(STAMP)
	$(PY) -m bench report $(RUN)

clean:
	rm -rf $(VENV) *.egg-info

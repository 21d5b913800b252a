# Front door: `make bench` and `make test`. Each target is one call to the CLI;
# the only rule with logic is the virtualenv, rebuilt when pyproject.toml changes.
# CLUSTER=tcp://HOST:8786 puts the load generator on a Dask cluster (README: Several hosts).
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
RUN    ?= results/latest
CLUSTER ?=

.PHONY: bench quick test report notebook clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

bench: $(STAMP)
	$(PY) -m bench run --profile default $(if $(CLUSTER),--cluster $(CLUSTER))

quick: $(STAMP)
	$(PY) -m bench run --profile quick $(if $(CLUSTER),--cluster $(CLUSTER))

test: $(STAMP)
	$(PY) -m pytest -q

report: $(STAMP)
	$(PY) -m bench report $(RUN)

notebook: $(STAMP)
	$(PY) -m pip install --quiet -e '.[notebook]'
	$(PY) -m jupyter lab notebooks/explore.ipynb

clean:
	rm -rf $(VENV) *.egg-info

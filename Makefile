# Two entry points that do all the set-up on a fresh machine:
#   make demo   the main job: train a small Transformer on the copy task and decode examples
#   make test   the test suite
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: test demo clean

$(BIN)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[dev,export]"
	touch $@

# Two worker processes, each taking whole test files: the tests run one torch thread each,
# so two cores take two at once (tests/conftest.py starts the longest files first).
test: $(BIN)/.installed
	$(BIN)/python -m pytest -q -n 2 --dist loadfile

demo: $(BIN)/.installed
	$(BIN)/transformer train copy --out runs/copy-demo --overwrite

clean:
	rm -rf $(VENV) runs

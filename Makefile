# followme: the two commands of the README, and their parts.
#   make main   set everything up on a fresh machine, start the lab PBXs, run site.yml on them
#   make test   set everything up, lint, ansible-test sanity, unit and validation tests on the lowest
#               supported ansible-core, every test (unit, real calls, deploys, a user repo), molecule test
VENV := .venv
BIN := $(CURDIR)/$(VENV)/bin
export PATH := $(BIN):$(PATH)
export ANSIBLE_CONFIG := $(CURDIR)/ansible.cfg

.PHONY: main test setup lab lint sanity test-min pytest molecule bench down

main: lab
	ansible-playbook -i inventory/lab site.yml

test: lab lint sanity test-min pytest molecule

setup: $(VENV)/.installed

# System packages (apt), then the controller's Python tools in a virtual environment.
$(VENV)/.installed: requirements.txt requirements-test.txt scripts/install-system-deps.sh
	bash scripts/install-system-deps.sh
	test -x $(BIN)/python || python3 -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -r requirements-test.txt
	touch $@

lab: setup
	$(BIN)/python -m lab up

lint: setup
	ruff check .
	yamllint -s .
	ansible-lint
	antsibull-changelog lint

# ansible-test sanity on the built, installed collection (its own venv, ~/.cache/followme/venv-sanity).
sanity: setup
	bash scripts/sanity.sh

# The lowest supported controller (.venv-min from requirements-min.txt): unit and validation tests.
test-min: setup
	bash scripts/test-min.sh

# Two xdist workers, each owning one lab PBX (gw0 -> pbx1, gw1 -> pbx2).
pytest: lab
	pytest -n 2 -p no:cacheprovider

molecule: lab
	molecule test

# Every cost at scale against its floor, measured side by side (bench/scale_bench.py; root: packet capture),
# on eight lab PBXs (the fleet figure); about an hour on two CPUs. Fewer: make bench BENCH="--sizes 1000".
BENCH ?= --sizes 1000,10000,50000 --fleet pbx1,pbx2,pbx3,pbx4,pbx5,pbx6,pbx7,pbx8
bench: setup
	$(BIN)/python -m lab up --hosts 8
	$(BIN)/python bench/scale_bench.py $(BENCH)

down: setup
	$(BIN)/python -m lab down

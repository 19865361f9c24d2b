#!/usr/bin/env bash
# The lowest supported controller (make test-min): a second virtual environment, .venv-min, with the
# lowest versions requirements.txt admits (requirements-min.txt, ansible-core 2.17), running the unit
# tests and the validation playbook tests (tests/deploy.py runs the ansible-playbook of the Python that
# runs pytest). The engine comparison of tests/unit/test_regex_engines.py needs the project's tools
# (node, regress from check-jsonschema) and no ansible-core: the newest environment runs it.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
VENV=$ROOT/.venv-min
cd "$ROOT"
if [ ! -x "$VENV/bin/pytest" ] || [ requirements-min.txt -nt "$VENV/.installed" ]; then
    python3 -m venv "$VENV"
    "$VENV/bin/python" -m pip install -q -r requirements-min.txt
    touch "$VENV/.installed"
fi
"$VENV/bin/ansible" --version | sed -n 1p
export ANSIBLE_CONFIG=$ROOT/ansible.cfg PATH=$VENV/bin:$PATH
"$VENV/bin/python" -m pytest -q -p no:cacheprovider tests/unit tests/test_validate_playbook.py \
    --ignore tests/unit/test_regex_engines.py -n 2 "$@"

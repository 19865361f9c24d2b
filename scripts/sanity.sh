#!/usr/bin/env bash
# ansible-test sanity on the built collection (make sanity): build the tarball as a release would,
# install it into a throw-away ansible_collections tree and run every sanity test there.
# The tools ansible-test wants (pylint, voluptuous, antsibull-docs-parser...) are its own pinned
# versions: they go into a virtual environment of their own (FOLLOWME_SANITY_VENV, default
# ~/.cache/followme/venv-sanity, made on the first run from PyPI) with the ansible-core of
# requirements-test.txt, never into the project's .venv. No container engine is needed.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
VENV=${FOLLOWME_SANITY_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/followme/venv-sanity}
CORE=$(grep -E '^ansible-core==' "$ROOT/requirements-test.txt")
if [ ! -x "$VENV/bin/ansible-test" ] || [ "$(cat "$VENV/.core" 2>/dev/null)" != "$CORE" ]; then
    rm -rf "$VENV" && python3 -m venv "$VENV"
    "$VENV/bin/python" -m pip install -q "$CORE"
    echo "$CORE" > "$VENV/.core"
fi
export PATH=$VENV/bin:$PATH
# ansible-test runs each sanity test in a virtual environment of its own, made without pip, and
# bootstraps pip there with a get-pip script from ci-files.testing.ansible.com, which this machine
# cannot reach. Its cache (under HOME, kept apart from the user's ~/.ansible) gets a stand-in made
# of the standard library's ensurepip and an ordinary pip install from the package index.
export HOME=$VENV/home
PIP_VERSION=$(python - <<'PY'
from ansible_test._internal.python_requirements import get_venv_packages
class Python:
    version = "%d.%d" % __import__("sys").version_info[:2]
print(get_venv_packages(Python)["pip"])
PY
)
mkdir -p "$HOME/.ansible/test/cache"
cat > "$HOME/.ansible/test/cache/get_pip_${PIP_VERSION//./_}.py" <<'PY'
"""Stand-in for get-pip.py: ensurepip, then pip install what ansible-test asked for (pip==N...)."""
import subprocess
import sys

args = [arg for arg in sys.argv[1:] if arg not in ("--no-setuptools", "--no-wheel")]
subprocess.run([sys.executable, "-m", "ensurepip", "--default-pip"], check=True, stdout=subprocess.DEVNULL)
sys.exit(subprocess.run([sys.executable, "-m", "pip", "install", "-q", *args], check=False).returncode)
PY
PYTHON_VERSION=$("$VENV/bin/python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
WORK=$(mktemp -d "${TMPDIR:-/tmp}/followme-sanity.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

# Outside the project: its ansible.cfg finds the collection through collections/, and an install
# would see it as already there.
cd "$WORK"
printf '[defaults]\n' > "$WORK/ansible.cfg"
export ANSIBLE_CONFIG=$WORK/ansible.cfg
ansible-galaxy collection build "$ROOT" --output-path "$WORK/dist" >/dev/null
ansible-galaxy collection install --force "$WORK"/dist/followme-asterisk-*.tar.gz -p "$WORK/tree" >/dev/null 2>&1
cd "$WORK/tree/ansible_collections/followme/asterisk"
# ansible-test takes the files to check from git when the collection is a repository.
git init -q . && git add -A && git -c user.name=sanity -c user.email=sanity@localhost commit -qm built
# --requirements: ansible-test installs its own pins (first run: a few minutes, then cached).
ansible-test sanity --python "$PYTHON_VERSION" --color no --requirements "$@"

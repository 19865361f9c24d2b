"""The cached root file system (Debian sid with Asterisk 22), shared read-only by all hosts.

Built once with mmdebstrap into CACHE_DIR/base-<key>, where <key> hashes the whole
recipe below (suite, packages, apt options, customisation): change any of it and the
next `up` builds a new base. Hosts mount it as the lower layer of an overlayfs.
"""

import hashlib
import json
import os
import time
from pathlib import Path

from lab.util import log, mounts, run, umount_tree

CACHE_DIR = Path(os.environ.get("FMLAB_CACHE", "/var/cache/followme-lab"))

SUITE = "sid"
PACKAGES = [
    "asterisk",  # Asterisk 22 (pulls asterisk-modules, asterisk-config)
    "asterisk-core-sounds-en-gsm",  # en prompts, incl. followme/* and vm-*
    "asterisk-moh-opsound-gsm",  # music on hold for the default class
    "openssh-server",
    "python3",  # for Ansible
    "procps",
    "iproute2",  # ip: Ansible network facts
]
APT_OPTIONS = [
    # the sid Release file seen here is past its Valid-Until date
    'Acquire::Check-Valid-Until "false"',
    'Acquire::Retries "3"',
]
# Run on the host after mmdebstrap, with $1 = the new root.
CUSTOMIZE = r"""
set -eu
R="$1"
# per-host things are made by `up`: ssh host keys, hostname, Asterisk config
rm -f "$R"/etc/ssh/ssh_host_*
mv "$R/etc/asterisk" "$R/etc/asterisk.dist"
mkdir "$R/etc/asterisk"
chown --reference="$R/etc/asterisk.dist" "$R/etc/asterisk"
chmod 0755 "$R/etc/asterisk"
rm -f "$R/etc/resolv.conf" "$R/etc/hostname"
: > "$R/etc/resolv.conf"
mkdir -p "$R/root/.ssh"
chmod 0700 "$R/root/.ssh"
"""
RECIPE_VERSION = 1


def recipe():
    return {
        "version": RECIPE_VERSION,
        "suite": SUITE,
        "variant": "apt",
        "packages": PACKAGES,
        "apt_options": APT_OPTIONS,
        "customize": CUSTOMIZE,
    }


def key():
    blob = json.dumps(recipe(), sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def path():
    return CACHE_DIR / f"base-{key()}"


def ensure():
    """Return the path of the base root, building it first if needed."""
    base = path()
    if (base / ".fmlab-base-ok").exists():
        return base
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    tmp = CACHE_DIR / f"{base.name}.tmp"
    _remove(tmp)
    log(f"building the base root file system {base} (Debian {SUITE}, about a minute)")
    t0 = time.monotonic()
    cmd = ["mmdebstrap", "--mode=root", "--variant=apt", "--include=" + ",".join(PACKAGES)]
    cmd += [f"--aptopt={o}" for o in APT_OPTIONS]
    cmd += [SUITE, str(tmp)]  # no mirror given: mmdebstrap's default Debian mirror
    buildlog = CACHE_DIR / f"{base.name}.log"
    with open(buildlog, "w") as f:
        p = run(cmd, check=False, stdout=f, stderr=f)
    if p.returncode != 0:
        raise RuntimeError(f"mmdebstrap failed ({p.returncode}); see {buildlog}")
    run(["sh", "-c", CUSTOMIZE, "customize", str(tmp)])
    (tmp / ".fmlab-base-ok").write_text(json.dumps(recipe(), indent=1) + "\n")
    _remove(base)
    os.rename(tmp, base)
    log(f"base built in {time.monotonic() - t0:.0f} s")
    return base


def prune(keep):
    """Remove other cached bases (and their build logs) that no mount uses any more."""
    in_use = " ".join(m[3] for m in mounts() if m[1] == "overlay")
    for old in CACHE_DIR.glob("base-*"):
        if old.name.startswith(keep.name) or f"lowerdir={old}" in in_use:
            continue
        log(f"removing old base {old}")
        if old.is_dir():
            _remove(old)
        else:
            old.unlink()


def _remove(path):
    """rm -rf a root tree that an interrupted mmdebstrap may have left with mounts inside."""
    if not os.path.lexists(path):
        return
    prefix = str(path) + "/"
    umount_tree(lambda m: m[0].startswith(prefix))
    run(["rm", "-rf", "--one-file-system", str(path)], check=False)

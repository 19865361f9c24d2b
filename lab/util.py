"""Small helpers: running commands, logging, reading mounts and processes."""

import os
import signal
import subprocess
import sys
import time

DAEMON_ENV = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "LANG": "C.UTF-8",
    "HOME": "/root",
}


def log(msg):
    print(f"[lab] {msg}", file=sys.stderr, flush=True)


def run(cmd, *, check=True, capture=False, timeout=None, env=None, quiet=False, **kw):
    """Run a command (a list). Returns CompletedProcess; raises on failure if check."""
    if capture:
        kw.setdefault("stdout", subprocess.PIPE)
        kw.setdefault("stderr", subprocess.PIPE)
    elif quiet:
        kw.setdefault("stdout", subprocess.DEVNULL)
        kw.setdefault("stderr", subprocess.DEVNULL)
    kw.setdefault("stdin", subprocess.DEVNULL)
    p = subprocess.run(cmd, check=False, text=True, timeout=timeout, env=env, **kw)
    if check and p.returncode != 0:
        err = (p.stderr or "").strip() if capture else ""
        raise RuntimeError(f"command failed ({p.returncode}): {' '.join(map(str, cmd))}\n{err}")
    return p


def _unescape(field):
    # mountinfo escapes space, tab, newline and backslash as \ooo
    out, i = [], 0
    while i < len(field):
        if field[i] == "\\" and i + 3 < len(field) and field[i + 1 : i + 4].isdigit():
            out.append(chr(int(field[i + 1 : i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def mounts():
    """List of (mount_point, fstype, source, super_options) from /proc/self/mountinfo."""
    result = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, _, right = line.rstrip("\n").partition(" - ")
            lf, rf = left.split(" "), right.split(" ")
            if len(lf) < 5 or len(rf) < 3:
                continue
            result.append((_unescape(lf[4]), rf[0], _unescape(rf[1]), rf[2]))
    return result


def mount_at(path):
    """The topmost mount at exactly `path`, or None."""
    path = str(path)
    found = None
    for m in mounts():
        if m[0] == path:
            found = m
    return found


def umount_tree(predicate):
    """Unmount every mount point for which predicate(mount) is true, deepest first."""
    targets = sorted({m[0] for m in mounts() if predicate(m)}, key=lambda p: (p.count("/"), len(p)), reverse=True)
    for mp in targets:
        if run(["umount", mp], check=False, capture=True).returncode != 0:
            run(["umount", "-l", mp], check=False, capture=True)
    return targets


def pids():
    for name in os.listdir("/proc"):
        if name.isdigit():
            yield int(name)


def pids_matching(root=None, netns_file=None):
    """Pids whose root directory is under `root` or whose network namespace is `netns_file`."""
    own = os.getpid()
    root = str(root).rstrip("/") if root else None
    ns_ino = None
    if netns_file:
        try:
            st = os.stat(netns_file)
            ns_ino = (st.st_dev, st.st_ino)
        except OSError:
            ns_ino = None
    found = set()
    for pid in pids():
        if pid == own:
            continue
        try:
            if root:
                r = os.readlink(f"/proc/{pid}/root")
                if r == root or r.startswith(root + "/"):
                    found.add(pid)
                    continue
            if ns_ino:
                st = os.stat(f"/proc/{pid}/ns/net")
                if (st.st_dev, st.st_ino) == ns_ino:
                    found.add(pid)
        except OSError:
            continue
    return found


def kill_pids(found, grace=3.0):
    """SIGTERM, wait up to `grace` seconds, then SIGKILL what is left."""

    found = set(found)
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 3.0)):
        for pid in list(found):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                found.discard(pid)
        deadline = time.monotonic() + wait
        while found and time.monotonic() < deadline:
            for pid in list(found):
                if not os.path.exists(f"/proc/{pid}") or _is_zombie(pid):
                    found.discard(pid)
            if found:
                time.sleep(0.05)
        if not found:
            return


def _is_zombie(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True

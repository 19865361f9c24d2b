"""One lab host: a network namespace, an overlay root, sshd and Asterisk inside it."""

import hashlib
import json
import os
import socket
import stat
import time
from pathlib import Path

from lab import base as base_mod
from lab.ports import EXTENSIONS, GATEWAY, carrier_port, device_port
from lab.util import DAEMON_ENV, kill_pids, log, mount_at, mounts, pids_matching, run, umount_tree

REPO = Path(__file__).resolve().parent.parent
LAB_DIR = REPO / ".lab"
TEMPLATES = Path(__file__).resolve().parent / "asterisk"
BRIDGE = "fmlab0"
NETNS_DIR = Path("/run/netns")
UTS_DIR = Path("/run/fmlab")  # persistent UTS namespaces (own host name per host)
ASTERISK_BOOT_TIMEOUT = 90


def baseline_files(host):
    """{file name: text} of the baseline Asterisk config of `host`."""
    files = {}
    for p in sorted(TEMPLATES.glob("*.conf")):
        files[p.name] = p.read_text()
    device = (TEMPLATES / "pjsip-device.conf.in").read_text()
    devices = "".join(
        device.replace("@EXT@", ext).replace("@PORT@", str(device_port(host.index, ext))) for ext in EXTENSIONS
    )
    pjsip = (TEMPLATES / "pjsip.conf.in").read_text().replace("@DEVICES@", devices)
    for k, v in {
        "@HOST@": host.name,
        "@ADDRESS@": host.address,
        "@GATEWAY@": GATEWAY,
        "@CARRIER_PORT@": str(carrier_port(host.index)),
    }.items():
        pjsip = pjsip.replace(k, v)
    files["pjsip.conf"] = pjsip
    return files


def baseline_hash(host):
    h = hashlib.sha256()
    for name, text in sorted(baseline_files(host).items()):
        h.update(name.encode() + b"\0" + text.encode() + b"\0")
    return h.hexdigest()[:16]


class Host:
    def __init__(self, index):
        self.index = int(index)
        self.name = f"pbx{self.index}"
        self.address = f"10.87.0.{10 + self.index}"
        self.netns = f"fmlab-pbx{self.index}"
        self.netns_file = NETNS_DIR / self.netns
        self.uts_file = UTS_DIR / f"{self.name}.uts"
        self.veth = f"fmlab-v{self.index}"
        self.tag = f"fmlab-{self.name}"  # source name of every mount of this host
        self.dir = LAB_DIR / self.name
        self.root = self.dir / "root"
        self.upper = self.dir / "upper"
        self.work = self.dir / "work"
        self.marker = self.dir / "host.json"

    def state(self):
        return {
            "name": self.name,
            "index": self.index,
            "address": self.address,
            "netns": self.netns,
            "root": str(self.root),
        }

    # ---------------------------------------------------------------- checks
    def sshd_ok(self, timeout=1.0):
        try:
            with socket.create_connection((self.address, 22), timeout=timeout) as s:
                s.settimeout(timeout)
                return s.recv(64).startswith(b"SSH-")
        except OSError:
            return False

    def asterisk_cli(self, command, timeout=15):
        """Output of `asterisk -rx command` inside the host, or None if it could not connect."""
        try:
            p = run(
                ["chroot", str(self.root), "/usr/sbin/asterisk", "-rx", command],
                check=False,
                capture=True,
                timeout=timeout,
                env=DAEMON_ENV,
            )
        except Exception:
            return None
        if p.returncode != 0 or "Unable to connect" in p.stdout + p.stderr:
            return None
        return p.stdout

    def asterisk_version(self):
        out = self.asterisk_cli("core show version", timeout=5)
        return out.strip() if out and out.startswith("Asterisk ") else None

    def problems(self, base):
        """What is wrong with this host (empty list: it is up and current)."""
        if not self.netns_file.exists():
            return ["no network namespace"]
        problems = []
        info = _read_json(self.marker)
        if info.get("base") != base.name:
            problems.append("new base")
        elif info.get("baseline") != baseline_hash(self):
            problems.append("baseline config in lab/asterisk changed")
        try:
            master = os.readlink(f"/sys/class/net/{self.veth}/master")
            if not master.endswith("/" + BRIDGE):
                problems.append(f"{self.veth} not on {BRIDGE}")
        except OSError:
            problems.append(f"no link {self.veth}")
        m = mount_at(self.root)
        if not m or m[1] != "overlay" or f"lowerdir={base}" not in m[3]:
            problems.append("root not mounted on the current base")
        if not mount_at(self.uts_file):
            problems.append("no UTS namespace")
        for sub in ("proc", "dev", "dev/pts", "run"):
            if not mount_at(self.root / sub):
                problems.append(f"/{sub} not mounted")
        if problems:
            return problems
        if not self.sshd_ok():
            problems.append("sshd does not answer")
        if not self.asterisk_version():
            problems.append("Asterisk does not answer")
        return problems

    # -------------------------------------------------------------- teardown
    def has_traces(self):
        """Does anything of this host exist right now (namespace, link, mount)?"""
        rootp = str(self.root)
        return (
            self.netns_file.exists()
            or self.uts_file.exists()
            or Path(f"/sys/class/net/{self.veth}").exists()
            or any(
                m[0] == rootp or m[0].startswith(rootp + "/") or m[2] == self.tag or m[2].startswith(self.tag + "-")
                for m in mounts()
            )
        )

    def teardown(self):
        """Stop every process of the host, unmount everything, remove its network. Idempotent."""
        roots = {str(self.root)} | {m[0] for m in mounts() if m[2] == self.tag and m[1] == "overlay"}
        victims = set()
        for r in roots:
            victims |= pids_matching(root=r)
        if self.netns_file.exists():
            victims |= pids_matching(netns_file=self.netns_file)
        if victims:
            kill_pids(victims)
        rootp = str(self.root)
        umount_tree(
            lambda m: (
                m[0] == rootp or m[0].startswith(rootp + "/") or m[2] == self.tag or m[2].startswith(self.tag + "-")
            )
        )
        if self.netns_file.exists():
            run(["ip", "netns", "del", self.netns], check=False, capture=True)
            if self.netns_file.exists():
                run(["umount", "-l", str(self.netns_file)], check=False, capture=True)
                try:
                    self.netns_file.unlink()
                except OSError:
                    pass
        if Path(f"/sys/class/net/{self.veth}").exists():
            run(["ip", "link", "del", self.veth], check=False, capture=True)
        for _ in range(5):
            if not mount_at(self.uts_file):
                break
            if run(["umount", str(self.uts_file)], check=False, capture=True).returncode != 0:
                run(["umount", "-l", str(self.uts_file)], check=False, capture=True)
        if self.uts_file.exists():
            self.uts_file.unlink()

    # ----------------------------------------------------------------- setup
    def setup(self, base, pubkey, fresh=False):
        """Create network, mounts and files (after teardown). Does not start daemons."""
        self._setup_network()
        self._setup_mounts(base, fresh)
        self._write_files(pubkey)

    def _setup_network(self):
        run(["ip", "netns", "add", self.netns], capture=True)
        run(["ip", "link", "add", self.veth, "type", "veth", "peer", "name", "eth0", "netns", self.netns], capture=True)
        _sysctl_file(f"/proc/sys/net/ipv6/conf/{self.veth}/disable_ipv6", "1")
        run(["ip", "link", "set", self.veth, "master", BRIDGE, "up"], capture=True)
        ns = ["nsenter", f"--net={self.netns_file}"]
        run(
            ns + ["sh", "-c", "for f in /proc/sys/net/ipv6/conf/*/disable_ipv6; do echo 1 > $f; done"],
            check=False,
            capture=True,
        )
        run(["ip", "-n", self.netns, "addr", "add", f"{self.address}/24", "dev", "eth0"], capture=True)
        run(["ip", "-n", self.netns, "link", "set", "eth0", "up"], capture=True)
        run(["ip", "-n", self.netns, "link", "set", "lo", "up"], capture=True)
        UTS_DIR.mkdir(exist_ok=True)
        self.uts_file.touch()
        run(["unshare", f"--uts={self.uts_file}", "hostname", self.name], capture=True)

    def _setup_mounts(self, base, fresh):
        info = _read_json(self.marker)
        why = (
            "--fresh"
            if fresh
            else "new base"
            if info.get("base") != base.name
            else "baseline config in lab/asterisk changed"
            if info.get("baseline") != baseline_hash(self)
            else None
        )
        if why:
            if self.upper.exists() or self.work.exists():
                log(f"{self.name}: {why}: starting from a clean overlay (baseline config only)")
            run(["rm", "-rf", str(self.upper), str(self.work)])
            info = {}
            if self.marker.exists():
                self.marker.unlink()
        for d in (self.upper, self.work, self.root):
            d.mkdir(parents=True, exist_ok=True)
        r = self.root
        run(
            [
                "mount",
                "-t",
                "overlay",
                self.tag,
                "-o",
                f"lowerdir={base},upperdir={self.upper},workdir={self.work}",
                str(r),
            ],
            capture=True,
        )
        run(["mount", "-t", "proc", "-o", "nosuid,nodev,noexec", f"{self.tag}-proc", str(r / "proc")], capture=True)
        # sysfs mounted from inside the namespace shows the host's own network devices
        run(
            [
                "nsenter",
                f"--net={self.netns_file}",
                "mount",
                "-t",
                "sysfs",
                "-o",
                "ro,nosuid,nodev,noexec",
                f"{self.tag}-sys",
                str(r / "sys"),
            ],
            check=False,
            capture=True,
        )
        run(["mount", "-t", "tmpfs", "-o", "mode=0755,nosuid,size=1m", f"{self.tag}-dev", str(r / "dev")], capture=True)
        for name, minor_major in {
            "null": (1, 3),
            "zero": (1, 5),
            "full": (1, 7),
            "random": (1, 8),
            "urandom": (1, 9),
            "tty": (5, 0),
        }.items():
            p = r / "dev" / name
            os.mknod(p, 0o666 | stat.S_IFCHR, os.makedev(*minor_major))
            os.chmod(p, 0o666)
        (r / "dev/pts").mkdir()
        (r / "dev/shm").mkdir()
        run(
            [
                "mount",
                "-t",
                "devpts",
                "-o",
                "newinstance,ptmxmode=0666,mode=0620,gid=5",
                f"{self.tag}-pts",
                str(r / "dev/pts"),
            ],
            capture=True,
        )
        run(
            ["mount", "-t", "tmpfs", "-o", "mode=1777,nosuid,nodev", f"{self.tag}-shm", str(r / "dev/shm")],
            capture=True,
        )
        for link, target in {
            "ptmx": "pts/ptmx",
            "fd": "/proc/self/fd",
            "stdin": "/proc/self/fd/0",
            "stdout": "/proc/self/fd/1",
            "stderr": "/proc/self/fd/2",
        }.items():
            os.symlink(target, r / "dev" / link)
        run(
            ["mount", "-t", "tmpfs", "-o", "mode=0755,nosuid,nodev,size=64m", f"{self.tag}-run", str(r / "run")],
            capture=True,
        )
        uid, gid = self._asterisk_ids()
        for d, mode, owner in (("sshd", 0o755, (0, 0)), ("asterisk", 0o755, (uid, gid)), ("lock", 0o1777, (0, 0))):
            p = r / "run" / d
            p.mkdir()
            os.chmod(p, mode)
            os.chown(p, *owner)
        if not info:
            self._init_upper(base)

    def _asterisk_ids(self):
        uid = gid = None
        for line in (self.root / "etc/passwd").read_text().splitlines():
            f = line.split(":")
            if f[0] == "asterisk":
                uid, gid = int(f[2]), int(f[3])
        if uid is None:
            raise RuntimeError(f"{self.name}: no user asterisk in the root")
        return uid, gid

    def _init_upper(self, base):
        """First boot of this host on this base: baseline config, identity, ssh host keys."""
        r = self.root
        uid, gid = self._asterisk_ids()
        for name, text in baseline_files(self).items():
            p = r / "etc/asterisk" / name
            p.write_text(text)
            os.chown(p, uid, gid)
            os.chmod(p, 0o644)
        (r / "etc/hostname").write_text(self.name + "\n")
        (r / "etc/hosts").write_text(
            f"# written by the followme lab\n127.0.0.1\tlocalhost\n{self.address}\t{self.name}\n{GATEWAY}\tgateway\n"
        )
        run(["chroot", str(r), "ssh-keygen", "-A"], capture=True, env=DAEMON_ENV)
        _write_json(
            self.marker,
            {"base": base.name, "baseline": baseline_hash(self), "created": time.strftime("%Y-%m-%dT%H:%M:%S")},
        )

    def _write_files(self, pubkey):
        """Lab plumbing rewritten on every start: sshd settings and root's key."""
        r = self.root
        (r / "etc/ssh/sshd_config.d").mkdir(parents=True, exist_ok=True)
        (r / "etc/ssh/sshd_config.d/00-fmlab.conf").write_text(
            "# written by the followme lab (python -m lab up)\n"
            f"ListenAddress {self.address}:22\n"
            "PermitRootLogin prohibit-password\n"
            "PasswordAuthentication no\n"
            "KbdInteractiveAuthentication no\n"
            "UsePAM no\n"
            "PidFile /run/sshd.pid\n"
        )
        ssh = r / "root/.ssh"
        ssh.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(ssh, 0o700)
        ak = ssh / "authorized_keys"
        ak.write_text(pubkey)
        os.chmod(ak, 0o600)

    # --------------------------------------------------------------- daemons
    def _spawn(self, name, argv):
        logf = self.dir / f"{name}.start.log"
        with open(logf, "w") as f:
            p = run(
                ["nsenter", f"--net={self.netns_file}", f"--uts={self.uts_file}", "chroot", str(self.root)] + argv,
                check=False,
                env=DAEMON_ENV,
                stdout=f,
                stderr=f,
                start_new_session=True,
                timeout=60,
            )
        if p.returncode != 0:
            raise RuntimeError(f"{self.name}: {name} failed to start ({p.returncode}): {logf.read_text()[-2000:]}")

    def start(self):
        self._spawn("sshd", ["/usr/sbin/sshd"])
        self._spawn("asterisk", ["/usr/sbin/asterisk", "-U", "asterisk", "-G", "asterisk"])

    def wait(self):
        """Wait until sshd answers and Asterisk is fully booted."""
        deadline = time.monotonic() + ASTERISK_BOOT_TIMEOUT
        while True:
            out = self.asterisk_cli("core waitfullybooted", timeout=ASTERISK_BOOT_TIMEOUT)
            if out is not None:
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.name}: Asterisk did not boot; see {self.root}/var/log/asterisk/messages")
            if not any(_comm(p) == "asterisk" for p in pids_matching(root=self.root)):
                tail = _tail(self.root / "var/log/asterisk/messages")
                raise RuntimeError(f"{self.name}: Asterisk exited while booting. Log tail:\n{tail}")
            time.sleep(0.2)
        while not self.sshd_ok():
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.name}: sshd does not answer on {self.address}:22")
            time.sleep(0.1)


def ensure_bridge():
    if not Path(f"/sys/class/net/{BRIDGE}").exists():
        run(["ip", "link", "add", BRIDGE, "type", "bridge"], capture=True)
    _sysctl_file(f"/proc/sys/net/ipv6/conf/{BRIDGE}/disable_ipv6", "1")
    run(["ip", "addr", "replace", f"{GATEWAY}/24", "dev", BRIDGE], capture=True)
    run(["ip", "link", "set", BRIDGE, "up"], capture=True)


def remove_bridge():
    if Path(f"/sys/class/net/{BRIDGE}").exists():
        run(["ip", "link", "del", BRIDGE], check=False, capture=True)


def known_indices():
    """Indices of every lab host that has any trace on this machine."""
    found = set()
    if NETNS_DIR.is_dir():
        for p in NETNS_DIR.glob("fmlab-pbx*"):
            found.add(p.name[len("fmlab-pbx") :])
    if UTS_DIR.is_dir():
        for p in UTS_DIR.glob("pbx*.uts"):
            found.add(p.name[len("pbx") : -len(".uts")])
    for p in Path("/sys/class/net").glob("fmlab-v*"):
        found.add(p.name[len("fmlab-v") :])
    if LAB_DIR.is_dir():
        for p in LAB_DIR.glob("pbx*"):
            found.add(p.name[len("pbx") :])
    for m in mounts():
        if m[2].startswith("fmlab-pbx"):
            found.add(m[2][len("fmlab-pbx") :].split("-")[0])
    return sorted(int(i) for i in found if i.isdigit())


def _sysctl_file(path, value):
    try:
        with open(path, "w") as f:
            f.write(value)
    except OSError:
        pass


def _comm(pid):
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return ""


def _tail(path, n=20):
    try:
        return "\n".join(Path(path).read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return "(no log)"


def _read_json(path):
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return {}


def _write_json(path, data):
    tmp = Path(str(path) + ".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)


__all__ = ["Host", "ensure_bridge", "remove_bridge", "known_indices", "LAB_DIR", "base_mod"]

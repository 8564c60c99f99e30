"""A private Dovecot IMAP server for tests: installed from Debian's packages when missing, started on
a free loopback port with its own configuration in a temporary directory.

The system's Dovecot is never touched: nothing under /etc/dovecot is read (`-c` names our file), the
system service is neither started nor stopped, and our instance has its own base_dir, state_dir,
log and port. (On a machine without a policy-rc.d, `apt-get install` itself may start the system
service on 143/993; we use neither.)

Accounts come from a passwd-file written at start with a pool of accounts (Dovecot re-reads a changed
file at most once a second, too slow to add one per test), so one server per test module serves every
test, each with an account — and so a maildir — of its own.

Running as root: Dovecot refuses to run its login processes as root and to give mail to uid 0, so
logins run as the package's `dovenull`, internal processes as `dovecot`, and the maildirs belong to
`nobody`. Running unprivileged: everything runs as the current user.
"""

from __future__ import annotations

import fcntl
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from imap_tools import MailBoxUnencrypted

from tests.support.procs import free_port
from tests.support.wait import until

PACKAGE = "dovecot-imapd"
DOVECOT = "/usr/sbin/dovecot"
IMAP_BINARY = "/usr/lib/dovecot/imap"  # shipped by dovecot-imapd; dovecot-core alone cannot serve IMAP
INSTALL_LOCK = Path(tempfile.gettempdir()) / "switchboard-dovecot-install.lock"


def _installed() -> bool:
    return Path(DOVECOT).exists() and Path(IMAP_BINARY).exists()


def ensure_installed() -> None:
    """Install dovecot-imapd once per machine; idempotent, safe with parallel test processes."""
    if _installed():
        return
    if os.geteuid() != 0:
        pytest.fail(f"Dovecot is not installed and installing it needs root: run "
                    f"`sudo apt-get install -y {PACKAGE}`", pytrace=False)
    if not shutil.which("apt-get"):
        pytest.fail(f"Dovecot is not installed and there is no apt-get to install {PACKAGE}", pytrace=False)
    with open(INSTALL_LOCK, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # a second test process waits here, then finds it installed
        if _installed():
            return
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        install = ["apt-get", "install", "-y", "-q", "--no-install-recommends", PACKAGE]
        proc = subprocess.run(install, capture_output=True, text=True, env=env, timeout=900)
        if proc.returncode != 0:
            # A fresh machine has no package lists yet: fetch them once and try again.
            subprocess.run(["apt-get", "update", "-q"], capture_output=True, text=True, env=env, timeout=900)
            proc = subprocess.run(install, capture_output=True, text=True, env=env, timeout=900)
        if proc.returncode != 0 or not _installed():
            pytest.fail(f"could not install {PACKAGE} with apt-get (exit {proc.returncode}):\n"
                        f"{(proc.stderr or proc.stdout)[-2000:]}", pytrace=False)


@dataclass
class Dovecot:
    workdir: Path
    port: int
    proc: subprocess.Popen
    mail_uid: int
    mail_gid: int
    accounts: dict[str, str]  # user → password, all written to the passwd-file at start
    host: str = "127.0.0.1"
    handed_out: set[str] = field(default_factory=set)

    @property
    def log(self) -> str:
        path = self.workdir / "dovecot.log"
        return path.read_text(errors="replace")[-4000:] if path.exists() else ""

    def new_account(self) -> tuple[str, str]:
        """An account nobody has used yet, with an empty mailbox: (user, password)."""
        free = [u for u in self.accounts if u not in self.handed_out]
        if not free:
            raise RuntimeError(f"all {len(self.accounts)} test accounts are used: start() with more")
        self.handed_out.add(free[0])
        return free[0], self.accounts[free[0]]

    def connect(self, user: str) -> MailBoxUnencrypted:
        box = MailBoxUnencrypted(self.host, self.port, timeout=10)
        box.login(user, self.accounts[user], initial_folder=None)
        return box

    def append(self, user: str, raw: bytes, folder: str = "INBOX") -> None:
        with self.connect(user) as box:
            if not box.folder.exists(folder):
                box.folder.create(folder)
            box.append(raw, folder)

    def messages(self, user: str, folder: str) -> list[bytes]:
        """The raw messages in a folder, in UID order, read without setting \\Seen."""
        with self.connect(user) as box:
            if not box.folder.exists(folder):
                return []
            box.folder.set(folder, readonly=True)
            out: list[bytes] = []
            for uid in box.uids("ALL"):
                typ, data = box.client.uid("FETCH", uid, "(BODY.PEEK[])")
                out.extend(item[1] for item in data if isinstance(item, tuple))
            return out

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        shutil.rmtree(self.workdir, ignore_errors=True)


def _accounts_for_processes() -> tuple[str, str, int, int]:
    """(internal user, login user, mail uid, mail gid) for the way we run."""
    if os.geteuid() != 0:
        me = pwd.getpwuid(os.geteuid())
        return me.pw_name, me.pw_name, me.pw_uid, me.pw_gid
    try:
        pwd.getpwnam("dovecot")
        pwd.getpwnam("dovenull")
        nobody = pwd.getpwnam("nobody")
    except KeyError as exc:
        pytest.fail(f"the system users of the Dovecot package are missing ({exc}); reinstall {PACKAGE}",
                    pytrace=False)
    return "dovecot", "dovenull", nobody.pw_uid, nobody.pw_gid


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM when the test process dies, even by kill -9, so no private
    Dovecot outlives its test run."""
    import ctypes
    import signal

    PR_SET_PDEATHSIG = 1
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def start(*, accounts: int = 20, timeout: float = 30) -> Dovecot:
    ensure_installed()
    # A short path: Dovecot's UNIX sockets live in base_dir and sun_path holds only 108 bytes.
    workdir = Path(tempfile.mkdtemp(prefix="sbdove-"))
    workdir.chmod(0o711)  # Dovecot's auth process (another user when we are root) reads the users file
    for sub in ("run", "state", "mail"):
        (workdir / sub).mkdir()
    internal, login, mail_uid, mail_gid = _accounts_for_processes()
    if os.geteuid() == 0:
        os.chown(workdir / "mail", mail_uid, mail_gid)
    pool = {f"support{i}": secrets.token_urlsafe(12) for i in range(1, accounts + 1)}
    (workdir / "users").write_text("".join(f"{u}:{{PLAIN}}{p}::::::\n" for u, p in pool.items()))
    (workdir / "users").chmod(0o644)  # read by Dovecot's auth process, which may not run as us
    port = free_port()
    conf = workdir / "dovecot.conf"
    conf.write_text(f"""\
# Private test instance: nothing here comes from /etc/dovecot.
instance_name = switchboard-test-{port}
base_dir = {workdir}/run
state_dir = {workdir}/state
log_path = {workdir}/dovecot.log
protocols = imap
listen = 127.0.0.1
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
default_internal_user = {internal}
default_login_user = {login}
first_valid_uid = 1
mail_location = maildir:{workdir}/mail/%n
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%n {workdir}/users
}}
userdb {{
  driver = static
  args = uid={mail_uid} gid={mail_gid} home={workdir}/mail/%n
}}
namespace inbox {{
  inbox = yes
  separator = /
}}
service imap-login {{
  chroot =
  inet_listener imap {{
    address = 127.0.0.1
    port = {port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
service anvil {{
  chroot =
}}
""")
    log = open(workdir / "console.log", "wb")
    proc = subprocess.Popen([DOVECOT, "-F", "-c", str(conf)], stdout=log, stderr=subprocess.STDOUT,
                            preexec_fn=_die_with_parent)
    server = Dovecot(workdir=workdir, port=port, proc=proc, mail_uid=mail_uid, mail_gid=mail_gid,
                     accounts=pool)

    def greets() -> bool:
        if proc.poll() is not None:
            console = (workdir / "console.log").read_text(errors="replace")
            server.stop()
            pytest.fail(f"dovecot exited with {proc.returncode}:\n{console}\n{server.log}", pytrace=False)
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
                return sock.recv(64).startswith(b"* OK")
        except OSError:
            return False

    try:
        until(greets, timeout=timeout, interval=0.05, message=f"dovecot greeting on 127.0.0.1:{port}")
    except AssertionError:
        server.stop()
        raise
    return server

"""IMAP mailbox polling: new mail → InboundMessage → the gateway's intake, nothing lost on a crash.

One poll: log in, make sure the Processed and Quarantine folders exist, select the folder, compare
its UIDVALIDITY with the stored one (a change means the server renumbered the mailbox: start from
UID 0 again), list the UIDs above the last one handled, and for each in UID order:

    fetch BODY.PEEK[] → parse_mime → accept(msg) → record the UID → MOVE to Processed
                              └─ unparseable or too large → record the UID → MOVE to Quarantine

Why this order is safe (at-least-once, deduplicated downstream):
- killed before `accept` returned: the UID is not recorded and the mail is still in the folder, so
  the next poll fetches and accepts it again — nothing is lost;
- killed after `accept`, before the UID was recorded: accepted again next time with the same
  external_id (its Message-ID, or the hash of its bytes); the router dedupes on the envelope's
  message id, so `accept` must wrap it as the webhooks do — `derive_id(msg.channel, msg.external_id)`
  — and the copy changes nothing downstream;
- killed after recording, before the move: the pending move is stored with the UID in the same
  transaction and is retried at the start of the next poll; the mail is not accepted again.
`accept` raising (neither broker nor spool took it) stops the batch: later mail waits rather than
overtaking it. Flags are never touched (BODY.PEEK): \\Seen belongs to the humans who read the box.

State lives in a small SQLite file: one row per mailbox (account, folder) with UIDVALIDITY and the
last UID handled, plus moves still to do. Run one poller per mailbox: two pollers on the same
folder would both accept each mail (harmless after dedupe, but wasted work).
"""

from __future__ import annotations

import logging
import re
import sqlite3
import ssl as ssl_module
import threading
from collections.abc import Callable, Iterable
from contextlib import closing
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from imap_tools import BaseMailBox, MailBox, MailBoxStartTls, MailBoxUnencrypted
from imap_tools.errors import MailboxFolderCreateError
from imap_tools.message import MailMessage

from services.gateway.channels import Malformed
from services.gateway.channels.email import parse_mime
from shared.contracts import InboundMessage

log = logging.getLogger(__name__)

#: Larger mail is quarantined without being downloaded (PROVIDERS.md: "too large → quarantine").
DEFAULT_MAX_BYTES = 25 * 1024 * 1024


class _RawMailMessage(MailMessage):
    """imap-tools' message that also keeps the bytes as fetched: the dedupe hash of a mail without
    a Message-ID must be computed over exactly what the server stored, not a re-serialisation."""

    def __init__(self, fetch_data: list) -> None:
        super().__init__(fetch_data)
        self.raw: bytes = self._get_message_data_parts(fetch_data)[0]


@dataclass(frozen=True)
class MailboxState:
    uidvalidity: int
    last_uid: int


class ImapState:
    """(UIDVALIDITY, last UID) per mailbox and the moves still owed, in one SQLite file."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with closing(self._connect()) as conn, conn:
            conn.execute("CREATE TABLE IF NOT EXISTS mailbox ("
                         " key TEXT PRIMARY KEY, uidvalidity INTEGER NOT NULL, last_uid INTEGER NOT NULL)")
            conn.execute("CREATE TABLE IF NOT EXISTS pending_move ("
                         " key TEXT NOT NULL, uidvalidity INTEGER NOT NULL, uid INTEGER NOT NULL,"
                         " destination TEXT NOT NULL, PRIMARY KEY (key, uidvalidity, uid))")

    def _connect(self) -> sqlite3.Connection:
        return sqlite3.connect(self.path, timeout=30)

    def get(self, key: str) -> MailboxState | None:
        with closing(self._connect()) as conn:
            row = conn.execute("SELECT uidvalidity, last_uid FROM mailbox WHERE key = ?", (key,)).fetchone()
        return MailboxState(*row) if row else None

    def reset(self, key: str, uidvalidity: int) -> None:
        """A new UIDVALIDITY: every stored UID (and pending move) of this mailbox means nothing now."""
        with closing(self._connect()) as conn, conn:
            conn.execute("INSERT INTO mailbox (key, uidvalidity, last_uid) VALUES (?, ?, 0)"
                         " ON CONFLICT (key) DO UPDATE SET uidvalidity = excluded.uidvalidity, last_uid = 0",
                         (key, uidvalidity))
            conn.execute("DELETE FROM pending_move WHERE key = ?", (key,))

    def handled(self, key: str, uidvalidity: int, uid: int, destination: str) -> None:
        """The mail is accepted (or quarantined): never fetch it again; move it when we can."""
        with closing(self._connect()) as conn, conn:
            conn.execute("UPDATE mailbox SET last_uid = MAX(last_uid, ?) WHERE key = ? AND uidvalidity = ?",
                         (uid, key, uidvalidity))
            conn.execute("INSERT OR REPLACE INTO pending_move (key, uidvalidity, uid, destination)"
                         " VALUES (?, ?, ?, ?)", (key, uidvalidity, uid, destination))

    def pending_moves(self, key: str, uidvalidity: int) -> list[tuple[int, str]]:
        with closing(self._connect()) as conn:
            return conn.execute("SELECT uid, destination FROM pending_move WHERE key = ? AND uidvalidity = ?"
                                " ORDER BY uid", (key, uidvalidity)).fetchall()

    def moved(self, key: str, uidvalidity: int, uids: Iterable[int]) -> None:
        with closing(self._connect()) as conn, conn:
            conn.executemany("DELETE FROM pending_move WHERE key = ? AND uidvalidity = ? AND uid = ?",
                             [(key, uidvalidity, uid) for uid in uids])


class ImapPoller:
    def __init__(self, host: str, port: int, user: str, password: str, *, folder: str = "INBOX",
                 processed_folder: str = "Processed", quarantine_folder: str = "Quarantine",
                 state_path: str | Path, accept: Callable[[InboundMessage], None], our_domains: Iterable[str],
                 clock: Callable[[], datetime], ssl: bool, starttls: bool = False,
                 ssl_context: ssl_module.SSLContext | None = None, timeout: float = 30,
                 max_bytes: int = DEFAULT_MAX_BYTES, allow_insecure: bool = False,
                 authserv_ids: Iterable[str] = ()):
        if ssl and starttls:
            raise ValueError("choose one of ssl (implicit TLS, port 993) and starttls (port 143)")
        if not ssl and not starttls and not allow_insecure:
            # The LOGIN would carry the mailbox's password in clear (IMAP_ALLOW_INSECURE says otherwise).
            raise ValueError("IMAP without TLS sends the password in clear: pass allow_insecure=True to mean it")
        self.host = host
        self.port = port
        self.user = user
        self.password = password
        self.folder = folder
        self.processed_folder = processed_folder
        self.quarantine_folder = quarantine_folder
        self.accept = accept
        self.our_domains = frozenset(d.lower() for d in our_domains)
        self.authserv_ids = tuple(authserv_ids)  # the mailbox's MTA, whose verdicts we trust
        self.clock = clock
        self.ssl = ssl
        self.starttls = starttls
        self.ssl_context = ssl_context
        self.timeout = timeout
        self.max_bytes = max_bytes
        self.state = ImapState(state_path)
        # UIDs are only meaningful per account and folder on one server.
        self.key = f"{user}@{host}:{port}/{folder}"

    # --- connection --------------------------------------------------------------------------------
    def _mailbox(self) -> BaseMailBox:
        if self.ssl:
            box: BaseMailBox = MailBox(self.host, self.port, timeout=self.timeout,
                                       ssl_context=self.ssl_context or ssl_module.create_default_context())
        elif self.starttls:
            box = MailBoxStartTls(self.host, self.port, timeout=self.timeout,
                                  ssl_context=self.ssl_context or ssl_module.create_default_context())
        else:
            box = MailBoxUnencrypted(self.host, self.port, timeout=self.timeout)
        box.email_message_class = _RawMailMessage
        return box

    # --- one poll ------------------------------------------------------------------------------------
    def poll_once(self) -> int:
        """Handle every new mail once; returns how many were accepted. Raises what `accept` raised
        (the rest of the batch waits for the next poll) and IMAP/network errors."""
        with self._mailbox() as box:
            box.login(self.user, self.password, initial_folder=None)
            self._refresh_capabilities(box)
            for name in (self.processed_folder, self.quarantine_folder):
                self._ensure_folder(box, name)
            box.folder.set(self.folder)
            uidvalidity = self._uidvalidity(box)
            stored = self.state.get(self.key)
            if stored is None or stored.uidvalidity != uidvalidity:
                if stored is not None:
                    log.warning("IMAP UIDVALIDITY of %s changed from %s to %s: reading the folder from the start",
                                self.key, stored.uidvalidity, uidvalidity)
                self.state.reset(self.key, uidvalidity)
                stored = MailboxState(uidvalidity, 0)
            self._finish_moves(box, uidvalidity)
            accepted = 0
            for uid, size in self._new_uids(box, stored.last_uid):
                if self._handle(box, uidvalidity, uid, size):
                    accepted += 1
            return accepted

    def _handle(self, box: BaseMailBox, uidvalidity: int, uid: int, size: int | None) -> bool:
        if size is not None and size > self.max_bytes:
            log.warning("IMAP %s UID %s is %s bytes, over %s: quarantined", self.key, uid, size, self.max_bytes)
            self._dispose(box, uidvalidity, uid, self.quarantine_folder)
            return False
        raw = self._fetch_raw(box, uid)
        if raw is None:
            return False  # expunged by someone else between the listing and the fetch
        try:
            msg = parse_mime(raw, received_at=self.clock(), our_domains=self.our_domains,
                             authserv_ids=self.authserv_ids)
        except Malformed as exc:
            log.warning("IMAP %s UID %s cannot be parsed (%s): quarantined", self.key, uid, exc)
            self._dispose(box, uidvalidity, uid, self.quarantine_folder)
            return False
        except Exception:
            # A parser bug must not wedge the mailbox behind one mail; a human can move it back.
            log.exception("IMAP %s UID %s crashed the parser: quarantined", self.key, uid)
            self._dispose(box, uidvalidity, uid, self.quarantine_folder)
            return False
        self.accept(msg)
        self._dispose(box, uidvalidity, uid, self.processed_folder)
        log.info("IMAP %s UID %s accepted", self.key, uid, extra={"external_id": msg.external_id})
        return True

    def _dispose(self, box: BaseMailBox, uidvalidity: int, uid: int, destination: str) -> None:
        self.state.handled(self.key, uidvalidity, uid, destination)
        box.move([str(uid)], destination)
        self.state.moved(self.key, uidvalidity, [uid])

    def _finish_moves(self, box: BaseMailBox, uidvalidity: int) -> None:
        """Moves owed by a poll that died between recording a UID and moving its mail. UID MOVE of a
        UID that is already gone is a no-op, so doing one twice is harmless."""
        pending = self.state.pending_moves(self.key, uidvalidity)
        for destination in sorted({d for _, d in pending}):
            uids = [uid for uid, d in pending if d == destination]
            box.move([str(u) for u in uids], destination)
            self.state.moved(self.key, uidvalidity, uids)

    @staticmethod
    def _refresh_capabilities(box: BaseMailBox) -> None:
        """imaplib keeps the capabilities announced before login; servers (Dovecot among them) add
        MOVE only after it. imap-tools picks UID MOVE from that list, and its fallback (COPY, then
        flag \\Deleted and EXPUNGE the whole folder) is neither atomic nor limited to our mail."""
        typ, data = box.client.capability()
        if typ == "OK" and data and isinstance(data[0], bytes):
            box.client.capabilities = tuple(data[0].decode("ascii", "replace").upper().split())

    @staticmethod
    def _ensure_folder(box: BaseMailBox, name: str) -> None:
        if box.folder.exists(name):
            return
        try:
            box.folder.create(name)
        except MailboxFolderCreateError:
            if not box.folder.exists(name):  # someone else may have created it meanwhile
                raise

    @staticmethod
    def _uidvalidity(box: BaseMailBox) -> int:
        # SELECT already reported it; ask with STATUS only if that untagged response is missing.
        typ, data = box.client.response("UIDVALIDITY")
        if data and data[-1]:
            return int(data[-1])
        return int(box.folder.status(box.folder.get(), ["UIDVALIDITY"])["UIDVALIDITY"])

    @staticmethod
    def _fetch_raw(box: BaseMailBox, uid: int) -> bytes | None:
        """The mail's bytes as stored, \\Seen untouched. Not through imap_tools' fetch: it parses every
        message as it fetches it, and a hostile one (thousands of nested parts) raised there, outside
        parse_mime, failing every poll on the same mail."""
        typ, data = box.client.uid("FETCH", str(uid), "(BODY.PEEK[])")
        if typ != "OK":
            raise RuntimeError(f"UID FETCH failed: {typ} {data!r}")
        for item in data:
            if isinstance(item, tuple) and len(item) == 2 and b"BODY[" in item[0].upper():
                return bytes(item[1])
        return None

    @staticmethod
    def _new_uids(box: BaseMailBox, last_uid: int) -> list[tuple[int, int | None]]:
        """(UID, size) of mail above last_uid, in UID order. "UID n:*" always includes the highest UID
        even when it is below n (RFC 3501 §6.4.8), hence the filter."""
        typ, data = box.client.uid("FETCH", f"{last_uid + 1}:*", "(UID RFC822.SIZE)")
        if typ != "OK":
            raise RuntimeError(f"UID FETCH failed: {typ} {data!r}")
        found: dict[int, int | None] = {}
        for item in data:
            line = item[0] if isinstance(item, tuple) else item
            if not isinstance(line, bytes):
                continue
            uid = re.search(rb"UID (\d+)", line)
            size = re.search(rb"RFC822\.SIZE (\d+)", line)
            if uid and int(uid.group(1)) > last_uid:
                found[int(uid.group(1))] = int(size.group(1)) if size else None
        return sorted(found.items())

    # --- the loop ------------------------------------------------------------------------------------
    def run(self, stop: threading.Event, interval: float = 30.0) -> None:
        """Poll until `stop` is set. A failed poll is logged and retried after the interval: the
        server being down, or the intake refusing, never ends the loop."""
        while not stop.is_set():
            try:
                count = self.poll_once()
                if count:
                    log.info("IMAP %s: %s message(s) accepted", self.key, count)
            except Exception:
                log.exception("IMAP poll of %s failed; retrying in %ss", self.key, interval)
            stop.wait(interval)

"""The services-mode stack the benchmark and the fault suite drive, outside pytest.

A fresh RabbitMQ vhost and PostgreSQL database, the three services as processes, fake Telegram,
Twilio and Graph APIs as local HTTP servers, and optionally a TCP proxy in front of the broker and
one in front of the database: cutting a proxy is an outage as the services see it (every
connection dropped, new ones refused) without touching the machine's real servers, which other
test runs share.

Every message we send comes from a sender of its own (a new Telegram user, phone number or page
user), so it opens one conversation and must produce exactly one acknowledgement: counting per
sender at the fakes and per provider id in the database is how lost and duplicated are measured.
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import json
import os
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlencode, urlsplit, urlunsplit

import yaml
from sqlalchemy import create_engine, text
from twilio.request_validator import RequestValidator

from tests.fakes.graph_api import FakeGraphApi
from tests.fakes.telegram_api import FakeBotApi
from tests.fakes.twilio_api import ACCOUNT_SID, AUTH_TOKEN, FakeTwilioApi
from tests.support import infra
from tests.support.cluster import NODES, LocalCluster
from tests.support.procs import Services, edited_config, free_port, services_env
from tests.support.tcpproxy import TcpBalancer, TcpProxy

BOT_TOKEN = "123456:BENCH-token"
BOT_ID = "123456"
TG_SECRET = "bench-secret_token"
META_SECRET = "bench-meta-app-secret"
PAGE_ID = "104512345678901"
SMS_TO = "+48221002030"


@dataclass(frozen=True)
class Msg:
    """One customer message: `key` is both its sender (where the acknowledgement goes) and the
    basis of its provider id."""

    channel: str  # telegram | sms | messenger
    n: int
    # The customer's words; None: one of the four TEXTS with `n` in it (the figures' usual run).
    text: str | None = None
    lang: str = "en"  # the client's interface language (Telegram's language_code)

    @property
    def address(self) -> str:
        if self.channel == "telegram":
            return str(5_000_000_000 + self.n)
        if self.channel == "sms":
            return f"+4860{self.n:07d}"
        return str(7_700_000_000_000_000 + self.n)

    @property
    def external_id(self) -> str:
        if self.channel == "telegram":
            return f"{BOT_ID}:{self.n}"
        if self.channel == "sms":
            return f"SM{self.n:032x}"
        return f"m_bench{self.n}"


TEXTS = ["Where is my parcel? Order {n}.", "I want to return the shoes from order {n}",
         "Payment failed twice for order {n}, what now?", "Hello, the app crashes when I log in ({n})"]


ALL_DAY = "00:00-24:00"
DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


def on_shift_around_the_clock(config: dict) -> None:
    """The example shop (deploy/switchboard.yaml) with its calendars and every agent's own hours open
    all day, every day, and no holidays or closures: whenever the bench runs, each message's owner is
    on shift, so each message is acknowledged and a notice sent at once (to its owner, or to the
    team's lead when every agent is at capacity) — the work of a shop in business hours. With the
    example's own hours, a run at night in Warsaw left every notice waiting for the shift: half the
    sends of a daytime run, so figures taken at different hours measured different work.

    Every agent is notified on Telegram (a chat of their own): the bench has no SMTP server, so an
    e-mail notice was only the sandbox sender's print, not a provider's send; on Telegram each
    notice is a send the fake Bot API receives and counts, as an e-mail would be to a real server."""
    for calendar in config["calendars"].values():
        calendar["hours"] = {day: [ALL_DAY] for day in DAYS}
        calendar.pop("holidays", None)
        calendar.pop("closures", None)
        calendar.pop("openings", None)
    for i, agent in enumerate(config["agents"]):
        agent["hours"] = {day: ALL_DAY for day in DAYS}
        if agent.get("notify", {}).get("channel") != "telegram":
            agent["notify"] = {"channel": "telegram", "address": str(100_200_900 + i)}


#: What the bench measures per message, by Stack.on_shift (printed and written with the figures).
WORKLOAD = {
    True: "daytime: the team on shift around the clock (tests/bench/stack.py on_shift_around_the_clock), "
          "each message acknowledged and a notice sent to its owner or the lead (2 sends)",
    False: "the example config's own hours in Warsaw: out of hours each message is only acknowledged "
           "(1 send), in hours its owner is notified too (2 sends)",
}


def _proxied(url: str, port: int) -> str:
    parts = urlsplit(url)
    netloc = parts.netloc.rsplit(":", 1)[0] + f":{port}"
    return urlunsplit(parts._replace(netloc=netloc))


@dataclass
class Stack:
    workdir: Path
    proxied: bool = False
    log_level: str = "WARNING"
    consumers: int | None = None  # SWITCHBOARD_CONSUMERS of the router and the notifier; None: their defaults
    #: The local 3-node cluster (make cluster-up) instead of the machine's broker: a vhost of its own
    #: there, BROKER_URL the failover list of the three nodes.
    cluster: LocalCluster | None = None
    #: Processes per service; from 2, the gateways sit behind a loopback balancer (`front`).
    replicas: int = 1
    front: TcpBalancer | None = None
    #: The team on shift around the clock (on_shift_around_the_clock), so every run measures the same
    #: work whatever the hour; False: the example config as it is, its hours in Warsaw.
    on_shift: bool = True
    bot: FakeBotApi = field(init=False)
    twilio: FakeTwilioApi = field(init=False)
    graph: FakeGraphApi = field(init=False)
    services: Services = field(init=False)
    broker_proxy: TcpProxy | None = None
    pg_proxy: TcpProxy | None = None

    def start(self) -> Stack:
        self.workdir.mkdir(parents=True, exist_ok=True)
        if self.cluster:
            self.vhost = f"sbstack{os.getpid()}x{int(time.time())}"
            self.cluster.ctl(1, "add_vhost", self.vhost)
            self.cluster.ctl(1, "set_permissions", "-p", self.vhost, "guest", ".*", ".*", ".*")
            self.rabbit_url = self.cluster.node_url(1).rstrip("/") + "/" + self.vhost
            broker_url = ";".join(self.cluster.node_url(n).rstrip("/") + "/" + self.vhost for n in NODES)
        else:
            self.vhost, self.rabbit_url = infra.new_vhost()
            broker_url = self.rabbit_url
        self.db, self.pg_url = infra.new_database()
        self.bot, self.twilio, self.graph = FakeBotApi().start(), FakeTwilioApi().start(), FakeGraphApi().start()
        database_url = self.pg_url
        if self.proxied:
            self.pg_proxy = TcpProxy(infra.PG_HOST, infra.PG_PORT)
            database_url = _proxied(database_url, self.pg_proxy.port)
            if not self.cluster:  # the cluster's faults are made on its nodes, not by a proxy
                self.broker_proxy = TcpProxy(infra.RABBIT_HOST, infra.RABBIT_PORT)
                broker_url = _proxied(broker_url, self.broker_proxy.port)
        env, ports = services_env(broker_url=broker_url, database_url=database_url, workdir=self.workdir, extra={
            "TELEGRAM_BOT_TOKEN": BOT_TOKEN, "TELEGRAM_API_BASE": self.bot.base_url,
            "TELEGRAM_WEBHOOK_SECRET": TG_SECRET,
            "TWILIO_ACCOUNT_SID": ACCOUNT_SID, "TWILIO_AUTH_TOKEN": AUTH_TOKEN, "TWILIO_API_BASE": self.twilio.base_url,
            "META_APP_SECRET": META_SECRET, "META_PAGE_TOKEN": "bench-page-token", "META_VERIFY_TOKEN": "bench",
            "META_GRAPH_BASE": self.graph.base_url, "LOG_LEVEL": self.log_level,
        } | ({"SWITCHBOARD_CONSUMERS": str(self.consumers)} if self.consumers else {}))
        if self.on_shift:
            # Through the services' own setting, as any deployment changes its config.
            env["SWITCHBOARD_CONFIG"] = str(edited_config(self.workdir, on_shift_around_the_clock))
        overrides: dict[str, dict[str, str]] = {}
        for i in range(2, self.replicas + 1):
            for service, var in (("router", "ROUTER_PORT"), ("notifier", "NOTIFIER_PORT"), ("gateway", "GATEWAY_PORT")):
                name = f"{service}{i}"
                ports[name] = free_port()
                overrides[name] = {var: str(ports[name]), "SWITCHBOARD_SPOOL_DIR": str(self.workdir / f"spool-{name}")}
        if self.replicas > 1:
            gateways = [ports["gateway"], *(ports[f"gateway{i}"] for i in range(2, self.replicas + 1))]
            self.front = TcpBalancer([("127.0.0.1", port) for port in gateways])
            # Twilio signs the URL it posts to: the balancer's, whichever gateway answers.
            env["PUBLIC_BASE_URL"] = f"http://127.0.0.1:{self.front.port}"
        self.public = env["PUBLIC_BASE_URL"]
        config = Path(env["SWITCHBOARD_CONFIG"])
        agents = yaml.safe_load(config.read_text())["agents"]
        #: The agents' Telegram chats: a send there is a notice, anywhere else an acknowledgement.
        self.notice_chats = frozenset(str(a["notify"]["address"]) for a in agents
                                      if a.get("notify", {}).get("channel") == "telegram")
        self.services = Services(env=env, workdir=self.workdir, ports=ports, overrides=overrides,
                                 front_port=self.front.port if self.front else None)
        # Routers first: the first migrates the database the notifiers share.
        for service in ("router", "notifier", "gateway"):
            for name in self.replica_names(service):
                self.services.start(name)
        self.engine = create_engine(self.pg_url, pool_size=2)
        return self

    def replica_names(self, service: str) -> list[str]:
        return [service] + [f"{service}{i}" for i in range(2, self.replicas + 1)]

    def close(self) -> None:
        def drop_vhost() -> None:
            if self.cluster:
                self.cluster.ctl(1, "delete_vhost", self.vhost)
            else:
                infra.drop_vhost(self.vhost)

        for closer in (lambda: self.services.stop_all(), lambda: self.engine.dispose(),
                       lambda: self.broker_proxy and self.broker_proxy.close(),
                       lambda: self.pg_proxy and self.pg_proxy.close(),
                       lambda: self.front and self.front.close(),
                       self.bot.stop, self.twilio.stop, self.graph.stop,
                       drop_vhost, lambda: infra.drop_database(self.db)):
            try:
                closer()
            except Exception as exc:  # noqa: BLE001 - clean up everything we can, report the rest
                print(f"cleanup: {type(exc).__name__}: {exc}")

    # -- the webhooks a provider would send ---------------------------------------------------

    def request(self, msg: Msg) -> tuple[str, bytes, dict[str, str]]:
        """(path, body, headers) of a correctly signed webhook carrying `msg`."""
        body_text = msg.text if msg.text is not None else TEXTS[msg.n % len(TEXTS)].format(n=msg.n)
        if msg.channel == "telegram":
            user = int(msg.address)
            update = {"update_id": msg.n, "message": {
                "message_id": msg.n % 100000 + 1, "date": int(time.time()), "text": body_text,
                "from": {"id": user, "is_bot": False, "first_name": f"C{msg.n}", "language_code": msg.lang},
                "chat": {"id": user, "type": "private", "first_name": f"C{msg.n}"}}}
            return ("/webhooks/telegram", json.dumps(update).encode(),
                    {"X-Telegram-Bot-Api-Secret-Token": TG_SECRET, "Content-Type": "application/json"})
        if msg.channel == "sms":
            form = {"MessageSid": msg.external_id, "SmsMessageSid": msg.external_id, "SmsSid": msg.external_id,
                    "AccountSid": ACCOUNT_SID, "From": msg.address, "To": SMS_TO, "Body": body_text,
                    "NumMedia": "0", "NumSegments": "1", "SmsStatus": "received", "ApiVersion": "2010-04-01",
                    "FromCountry": "PL", "ToCountry": "PL"}
            path = "/webhooks/twilio/sms"
            signature = RequestValidator(AUTH_TOKEN).compute_signature(self.public + path, form)
            return (path, urlencode(form).encode(), {"X-Twilio-Signature": signature,
                                                     "Content-Type": "application/x-www-form-urlencoded"})
        now_ms = int(time.time() * 1000)
        payload = {"object": "page", "entry": [{"id": PAGE_ID, "time": now_ms, "messaging": [{
            "sender": {"id": msg.address}, "recipient": {"id": PAGE_ID}, "timestamp": now_ms,
            "message": {"mid": msg.external_id, "text": body_text}}]}]}
        raw = json.dumps(payload).encode()
        sig = "sha256=" + hmac.new(META_SECRET.encode(), raw, hashlib.sha256).hexdigest()
        return "/webhooks/meta", raw, {"X-Hub-Signature-256": sig, "Content-Type": "application/json"}

    # -- what came out --------------------------------------------------------------------------

    def acks(self) -> Counter[str]:
        """Acknowledgements received at the fake providers, per address."""
        with self.bot._lock:
            counts = Counter(s.chat_id for s in self.bot.sent)
        with self.twilio._lock:
            counts.update(s.to for s in self.twilio.sent)
        with self.graph._lock:
            counts.update(s.recipient for s in self.graph.sends if s.recipient)
        return counts

    def notices(self) -> int:
        """Notices sent to the agents' Telegram chats so far (the fake Bot API's sends there)."""
        with self.bot._lock:
            return sum(1 for s in self.bot.sent if s.chat_id in self.notice_chats)

    @property
    def workload(self) -> str:
        return WORKLOAD[self.on_shift]

    def ack_times(self) -> dict[str, float]:
        """Telegram only (the fake stamps each send): address → first acknowledgement time."""
        out: dict[str, float] = {}
        with self.bot._lock:
            for s in self.bot.sent:
                out.setdefault(s.chat_id, s.at)
        return out

    def stored(self, external_ids: list[str]) -> tuple[Counter[str], Counter[str]]:
        """(messages stored per provider id, conversations per provider id's customer)."""
        with self.engine.connect() as conn:
            msgs = Counter(dict(conn.execute(text(
                "SELECT external_id, count(*) FROM messages WHERE external_id = ANY(:ids) GROUP BY external_id"),
                {"ids": external_ids}).all()))
            convs = Counter(dict(conn.execute(text(
                "SELECT m.external_id, count(DISTINCT c.id) FROM messages m "
                "JOIN conversations c2 ON c2.id = m.conversation_id "
                "JOIN conversations c ON c.customer_id = c2.customer_id "
                "WHERE m.external_id = ANY(:ids) GROUP BY m.external_id"), {"ids": external_ids}).all()))
        return msgs, convs

    def rss_kib(self) -> dict[str, int]:
        out = {}
        for name, proc in self.services.procs.items():
            try:
                status = Path(f"/proc/{proc.pid}/status").read_text()
            except OSError:
                continue
            out[name] = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:"))
        return out


class Poster:
    """Sends webhooks from a pool of threads, each with its own keep-alive HTTP connection.

    Plain http.client, not httpx: the driver shares the machine's two cores with the pipeline it
    measures, and httpx's request and response objects cost several times the CPU of one
    http.client exchange on a kept connection. A connection that fails is dropped and the next
    post opens a new one; that post counts as status 0, as a refused webhook."""

    def __init__(self, stack: Stack, threads: int = 16, timeout: float = 30):
        self.stack = stack
        self.threads = threads
        self.timeout = timeout
        self._local = threading.local()
        self.statuses: Counter[int] = Counter()
        self.accepted: list[Msg] = []
        self.sent_at: dict[str, float] = {}  # address → scheduled send time (wall clock)
        self._lock = threading.Lock()

    def _connection(self) -> http.client.HTTPConnection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            parts = urlsplit(self.stack.services.gateway)
            conn = self._local.conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port or 80,
                                                                 timeout=self.timeout)
        return conn

    def post(self, msg: Msg, scheduled: float | None = None) -> int:
        path, body, headers = self.stack.request(msg)
        at = scheduled if scheduled is not None else time.time()
        status = 0
        for attempt in (1, 2):
            conn = self._connection()
            reused = conn.sock is not None
            try:
                conn.request("POST", path, body, headers)
                response = conn.getresponse()
                response.read()  # the whole answer, so the connection carries the next request
                status = response.status
                if response.will_close:
                    conn.close()  # http.client reconnects on the next request
                break
            except (OSError, http.client.HTTPException) as exc:
                conn.close()
                self._local.conn = None
                # A kept connection the gateway closed while it was idle: once more on a new one
                # (as httpx's pool does). A message posted twice is one message downstream.
                if not (reused and attempt == 1 and isinstance(exc, (http.client.RemoteDisconnected,
                                                                     ConnectionResetError, BrokenPipeError))):
                    break
        with self._lock:
            self.statuses[status] += 1
            self.sent_at[msg.address] = at
            if status == 200:
                self.accepted.append(msg)
        return status


def run_stream(poster: Poster, msgs: list[Msg], rate: float | None, stop: threading.Event | None = None) -> float:
    """Send `msgs` at `rate` per second (None: as fast as the pool goes); returns the elapsed time.

    Send times are the schedule's, not when a busy thread got round to it, so a stalled gateway
    shows up as latency instead of silently lowering the offered rate."""
    from concurrent.futures import ThreadPoolExecutor

    start = time.time()
    with ThreadPoolExecutor(poster.threads) as pool:
        futures = []
        for i, msg in enumerate(msgs):
            if stop is not None and stop.is_set():
                break
            scheduled = None
            if rate:
                scheduled = start + i / rate
                delay = scheduled - time.time()
                if delay > 0:
                    time.sleep(delay)
            futures.append(pool.submit(poster.post, msg, scheduled))
        for f in futures:
            f.result()
    return time.time() - start


def percentile(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = min(len(ordered) - 1, max(0, int(round(p / 100 * (len(ordered) - 1)))))
    return ordered[k]


def machine() -> dict:
    import platform

    load = os.getloadavg()
    mem = next((line.split()[1] for line in Path("/proc/meminfo").read_text().splitlines()
                if line.startswith("MemTotal:")), "?")
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    return {"cpus": os.cpu_count(), "cpu_model": cpu, "mem_total_kib": int(mem) if mem.isdigit() else mem,
            "python": platform.python_version(), "kernel": platform.release(),
            "loadavg_at_start": [round(x, 2) for x in load]}

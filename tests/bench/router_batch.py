"""The router's CPU per message when it handles micro-batches, in this process.

A fresh PostgreSQL database, migrated; the router's real batch handler (`handle_inbound_batch`,
with the real classifier and language detection of deploy/switchboard.yaml) is given batches of
Telegram messages as the worker would: first from new customers (new customer, conversation, owner
choice), then the same senders again (each joins their open conversation). Per phase it prints
the process's CPU time per message (time.process_time: the neighbours on a shared machine do not
count), the CPU the PostgreSQL backend spent on the router's statements (/proc of the backend
behind the one pooled connection, when this machine's /proc shows it) and the statements per batch.

    python -m tests.bench.router_batch [--batch 16] [--batches 40] [--texts bench|mixed] [--rounds 3] [--only-new]

`--texts bench` are the bench driver's English texts (tests/bench/stack.py), `mixed` the
regression set's messages in every language (tests/data/classify/holdout.jsonl) with their language
as the channel's hint. The figure per phase is the median over `--rounds` rounds, each on fresh
senders, and the best round (the least disturbed by the neighbours).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import event, text

from shared.config import load_config
from shared.contracts import Envelope, Identity, InboundMessage, derive_id
from shared.db import make_engine, migrate, session_factory
from tests.bench.stack import TEXTS
from tests.support import infra

ROOT = Path(__file__).resolve().parents[2]
TICKS = 100  # os.sysconf("SC_CLK_TCK") on Linux


def _texts(kind: str) -> Callable[[int], tuple[str, str]]:
    if kind == "bench":
        return lambda n: (TEXTS[n % len(TEXTS)].format(n=n), "en")
    lines = [json.loads(line) for line in (ROOT / "tests/data/classify/holdout.jsonl").read_text().splitlines()
             if line.strip()]
    return lambda n: (lines[n % len(lines)]["text"], lines[n % len(lines)]["lang"])


def envelope(n: int, user: int, at: datetime, texts: Callable[[int], tuple[str, str]]) -> Envelope:
    body, lang = texts(n)
    msg = InboundMessage(channel="telegram", external_id=f"123456:{n}", sender=Identity("telegram", str(user)),
                         sender_name=f"C{user}", text=body, subject=None, received_at=at, reply_to=str(user),
                         language_hint=lang)
    return Envelope.wrap(msg, message_id=derive_id("telegram", msg.external_id), correlation_id=f"corr{n}",
                         occurred_at=at)


def _backend_cpu(pids: set[int]) -> float:
    """CPU seconds of these PostgreSQL backends so far (0 where /proc does not show them)."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / TICKS


def measure(*, batch: int = 16, batches: int = 40, texts: str = "bench", rounds: int = 3, warmup: int = 3,
            only_new: bool = False) -> dict:
    from services.router.bootstrap import build_deps
    from services.router.handlers import handle_inbound_batch

    config = load_config(ROOT / "deploy" / "switchboard.yaml")
    name, url = infra.new_database()
    engine = make_engine(url, pool_size=1)
    try:
        migrate(engine)
        deps = build_deps(config, session_factory(engine))
        pids: set[int] = set()
        sent: list[int] = [0]

        @event.listens_for(engine, "connect")
        def _pid(dbapi_conn, _record) -> None:
            pids.add(dbapi_conn.info.backend_pid)

        @event.listens_for(engine, "before_cursor_execute")
        def _count(*_args) -> None:
            sent[0] += 1

        engine.dispose()  # the next connection is seen by the listener
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        text_of = _texts(texts)
        # A Monday morning in the shop's hours, as the integration tests use; every message a second apart.
        start = datetime(2026, 11, 23, 9, tzinfo=UTC)
        serial = [0]

        def run(users: list[int], offset: timedelta) -> tuple[float, float, int]:
            envelopes = []
            for user in users:
                serial[0] += 1
                envelopes.append(envelope(serial[0], user, start + offset + timedelta(milliseconds=serial[0]),
                                          text_of))
            sent[0] = 0
            pg0, cpu0 = _backend_cpu(pids), time.process_time()
            results = handle_inbound_batch(envelopes, deps)
            cpu, pg = time.process_time() - cpu0, _backend_cpu(pids) - pg0
            failed = [r for r in results if isinstance(r, Exception)]
            assert not failed, failed
            return cpu, pg, sent[0]

        phases: dict[str, list[tuple[float, float, int]]] = {"new": [], "join": []}
        per_batch: dict[str, list[float]] = {"new": [], "join": []}
        user = 7_000_000_000
        for r in range(rounds + 1):
            n = warmup if r == 0 else batches
            senders = [list(range(user + i * batch, user + (i + 1) * batch)) for i in range(n)]
            user += n * batch
            new = [run(users, timedelta(minutes=r)) for users in senders]
            join = [run(users, timedelta(minutes=r, seconds=30)) for users in senders] if not only_new else []
            if r:
                phases["new"].append(_sums(new))
                per_batch["new"] += [cpu for cpu, _, _ in new]
                if join:
                    phases["join"].append(_sums(join))
                    per_batch["join"] += [cpu for cpu, _, _ in join]
        result: dict = {"batch": batch, "batches": batches, "texts": texts, "rounds": rounds}
        for phase, sums in phases.items():
            if not sums:
                continue
            messages = batches * batch
            result[phase] = {
                "cpu_ms_per_msg": round(statistics.median(s[0] for s in sums) * 1000 / messages, 3),
                "cpu_ms_per_msg_best": round(min(s[0] for s in sums) * 1000 / messages, 3),
                # The first quartile of the batches: the neighbours only ever add to a batch's CPU.
                "cpu_ms_per_msg_q1": round(statistics.quantiles(per_batch[phase], n=4)[0] * 1000 / batch, 3),
                "cpu_ms_per_msg_rounds": [round(s[0] * 1000 / messages, 3) for s in sums],
                "pg_ms_per_msg": round(statistics.median(s[1] for s in sums) * 1000 / messages, 3),
                "statements_per_batch": round(statistics.median(s[2] for s in sums) / batches, 2),
            }
        return result
    finally:
        engine.dispose()
        infra.drop_database(name)


def _sums(runs: list[tuple[float, float, int]]) -> tuple[float, float, int]:
    return sum(r[0] for r in runs), sum(r[1] for r in runs), sum(r[2] for r in runs)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--batches", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--texts", choices=("bench", "mixed"), default="bench")
    parser.add_argument("--only-new", action="store_true", help="new customers only (the bench's traffic)")
    args = parser.parse_args(argv)
    print(json.dumps(measure(batch=args.batch, batches=args.batches, texts=args.texts, rounds=args.rounds,
                             only_new=args.only_new), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

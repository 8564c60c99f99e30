"""The router's cost per message with 1 k and with 1 M stored conversations.

Two fresh databases, migrated, bulk-loaded inside PostgreSQL with generate_series (customers,
their identities, conversations with their assignment and first message; a fixed handful open,
the rest resolved, as in a shop with a long history), then `handle_inbound` — the real router
handler with its real classifier — runs in this process for messages from new customers, the
costliest path (new customer, new conversation, owner choice). The two databases take turns
message by message, so background load on the machine hits both alike; the cost is the median.

    python -m tests.bench.growth [--conversations 1000000] [--messages 300]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import text

from shared.config import load_config
from shared.contracts import Envelope, Identity, InboundMessage, derive_id
from shared.db import make_engine, migrate, session_factory
from tests.support import infra

ROOT = Path(__file__).resolve().parents[2]
OPEN = 10  # open conversations in either database: load is per open conversation, not history

LOAD_SQL = [
    """INSERT INTO customers (id, name, created_at)
       SELECT md5('cust' || g)::uuid::text, 'Customer ' || g, now() - (g % 700) * interval '1 day'
       FROM generate_series(1, :n) g""",
    """INSERT INTO identities (customer_id, kind, value, created_at)
       SELECT md5('cust' || g)::uuid::text, 'telegram', (9000000000 + g)::text, now() - (g % 700) * interval '1 day'
       FROM generate_series(1, :n) g""",
    """INSERT INTO conversations (id, reference, customer_id, status, opening, channel, reply_to, language,
                                  category, category_reason, owner_id, team_id, assignment_reason, opened_at,
                                  promise_due, resolved_at, last_message_at)
       SELECT md5('conv' || g)::uuid::text, 'SB-B' || lpad(g::text, 10, '0'), md5('cust' || g)::uuid::text,
              CASE WHEN g <= :open THEN 'open' ELSE 'resolved' END, 1, 'telegram', (9000000000 + g)::text, 'en',
              (CAST(:categories AS text[]))[1 + g % cardinality(CAST(:categories AS text[]))], '{"confidence": 0.9}'::jsonb,
              (CAST(:agents AS text[]))[1 + g % cardinality(CAST(:agents AS text[]))], CAST(:team AS text), 'bench history',
              now() - (g % 700 + 8) * interval '1 day', now() - (g % 700 + 7) * interval '1 day',
              CASE WHEN g <= :open THEN NULL ELSE now() - (g % 700 + 8) * interval '1 day' + interval '2 hours' END,
              now() - (g % 700 + 8) * interval '1 day'
       FROM generate_series(1, :n) g""",
    """INSERT INTO assignments (conversation_id, agent_id, team_id, reason, assigned_at)
       SELECT md5('conv' || g)::uuid::text, (CAST(:agents AS text[]))[1 + g % cardinality(CAST(:agents AS text[]))], CAST(:team AS text), 'bench: history',
              now() - (g % 700 + 8) * interval '1 day'
       FROM generate_series(1, :n) g""",
    """INSERT INTO messages (id, conversation_id, direction, channel, external_id, sender_kind, sender_value, text,
                             details, received_at, correlation_id)
       SELECT md5('msg' || g)::uuid::text, md5('conv' || g)::uuid::text, 'in', 'telegram', 'hist:' || g, 'telegram',
              (9000000000 + g)::text, 'Where is my parcel? Order ' || g, '{}'::jsonb,
              now() - (g % 700 + 8) * interval '1 day', md5('corr' || g)::uuid::text
       FROM generate_series(1, :n) g""",
]


def load(url: str, n: int, config) -> float:
    engine = make_engine(url, pool_size=1)
    started = time.monotonic()
    try:
        migrate(engine)
        params = {"n": n, "open": OPEN, "categories": list(config.categories), "agents": list(config.agents),
                  "team": next(iter(config.teams), None)}
        with engine.begin() as conn:
            # The rows are consistent by construction: skip the per-row foreign key triggers, which
            # would double the load time (superuser only; the setting ends with the transaction).
            conn.execute(text("SET LOCAL session_replication_role = replica"))
            for sql in LOAD_SQL:
                conn.execute(text(sql), params)
        with engine.connect() as conn:
            conn.execution_options(isolation_level="AUTOCOMMIT").execute(text("VACUUM ANALYZE"))
    finally:
        engine.dispose()
    return time.monotonic() - started


def envelope(i: int) -> Envelope:
    at = datetime.now(UTC)
    user = str(6_000_000_000 + i)
    msg = InboundMessage(
        channel="telegram", external_id=f"123456:{i}", sender=Identity("telegram", user), sender_name=f"New {i}",
        text=["Where is my parcel? Order 4821.", "I want to return the shoes", "Payment failed twice"][i % 3],
        subject=None, received_at=at, reply_to=user, language_hint="en")
    return Envelope.wrap(msg, message_id=derive_id("telegram", msg.external_id), correlation_id=str(uuid.uuid4()),
                         occurred_at=at)


EXPLAINED = {
    "loads": "SELECT owner_id, count(*) FROM conversations WHERE status = 'open' AND owner_id IS NOT NULL "
             "GROUP BY owner_id",
    "last_assigned": "SELECT (SELECT max(assigned_at) FROM assignments WHERE agent_id = 'anna'), "
                     "(SELECT max(assigned_at) FROM assignments WHERE agent_id = 'taras')",
    "identity": "SELECT * FROM identities WHERE kind = 'telegram' AND value = '9000000500'",
    "open_conversation": "SELECT * FROM conversations WHERE customer_id = md5('cust500')::uuid::text "
                         "AND status = 'open'",
}


def explain(url: str) -> dict[str, str]:
    engine = make_engine(url, pool_size=1)
    try:
        with engine.connect() as conn:
            return {k: "\n".join(r[0] for r in conn.execute(text("EXPLAIN (ANALYZE, COSTS OFF) " + q)))
                    for k, q in EXPLAINED.items()}
    finally:
        engine.dispose()


def measure(*, conversations: int = 1_000_000, small: int = 1000, messages: int = 300, warmup: int = 20,
            verbose: bool = True) -> dict:
    from services.router.bootstrap import build_deps
    from services.router.handlers import handle_inbound

    config = load_config(ROOT / "deploy" / "switchboard.yaml")
    dbs = [infra.new_database(), infra.new_database()]
    engines = []
    try:
        sizes = (small, conversations)
        load_s = []
        for (_, url), n in zip(dbs, sizes, strict=True):
            seconds = load(url, n, config)
            load_s.append(round(seconds, 1))
            if verbose:
                print(f"router growth: loaded {n} conversations in {seconds:.1f}s", flush=True)
        engines = [make_engine(url) for _, url in dbs]
        deps = [build_deps(config, session_factory(e)) for e in engines]
        costs: list[list[float]] = [[], []]
        for i in range(warmup + messages):
            for k in (0, 1):
                env = envelope(i)
                t = time.perf_counter()
                events = handle_inbound(env, deps[k])
                elapsed = time.perf_counter() - t
                assert len(events) == 1, "a new customer's message opens a conversation"
                if i >= warmup:
                    costs[k].append(elapsed * 1000)
        small_ms, large_ms = statistics.median(costs[0]), statistics.median(costs[1])
        plans = explain(dbs[1][1])
        result = {"conversations_small": small, "conversations_large": conversations, "messages": messages,
                  "ms_per_msg_small": round(small_ms, 2), "ms_per_msg_large": round(large_ms, 2),
                  "p90_ms_small": round(sorted(costs[0])[int(0.9 * messages)], 2),
                  "p90_ms_large": round(sorted(costs[1])[int(0.9 * messages)], 2),
                  "ratio": round(large_ms / small_ms, 3), "load_seconds": load_s, "plans_large": plans}
        if verbose:
            print(f"router growth: {small_ms:.2f} ms/msg with {small}, {large_ms:.2f} ms/msg with {conversations}"
                  f" → ratio {result['ratio']}", flush=True)
        return result
    finally:
        for e in engines:
            e.dispose()
        for name, _ in dbs:
            infra.drop_database(name)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--conversations", type=int, default=1_000_000)
    parser.add_argument("--messages", type=int, default=300)
    parser.add_argument("--explain", action="store_true", help="print the query plans on the large database")
    args = parser.parse_args(argv)
    result = measure(conversations=args.conversations, messages=args.messages)
    plans = result.pop("plans_large")
    print(json.dumps(result, indent=2))
    if args.explain:
        for name, plan in plans.items():
            print(f"--- {name}\n{plan}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The leads' figures at a million conversations: GET /api/v1/kpis and /dashboard/ over 7, 90 and
365 days, and the first page of GET /api/v1/conversations, as the team lead, against the router
in services mode; the router's RSS before and after the figures.

The daily roll-ups (services/router/kpi_store.py) are built for the whole history before the
router starts, as after an upgrade (migration 0017 marks every day, the roll-up job builds them),
and timed. The history is loaded inside PostgreSQL, set-based (tests/bench/growth.py's generate_series
inserts, then one UPDATE giving most conversations a first response, a resolution time and some a
reopening, and one INSERT of survey results), so a million conversations load in minutes.

    python -m tests.bench.kpi_bench [--conversations 1000000] [--repeat 5] [--database-url URL]

Run alone, it merges its keys into var/bench/latest.json; `make bench` runs it after the others.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import httpx
from sqlalchemy import delete, text

from shared.config import load_config
from shared.db import make_engine, migrate, session_factory, transaction
from tests.bench import growth
from tests.bench.stack import percentile
from tests.support import infra
from tests.support.procs import Services, services_env

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "var" / "bench" / "latest.json"
LOADAVG_AT_START = [round(x, 2) for x in os.getloadavg()]
PERIODS = (7, 90, 365)

KPI_SQL = [
    # First responses within 0–4 h of opening (business seconds as the router would have kept them
    # for an opening in hours: the bench times the sums, not the calendar), resolution 2 h after
    # opening as loaded, every tenth conversation reopened once.
    """UPDATE conversations SET
         first_response_at = CASE WHEN right(reference, 1) <> '0'
                                  THEN opened_at + (right(reference, 3)::int % 240) * interval '1 minute' END,
         first_response_business_s = CASE WHEN right(reference, 1) <> '0'
                                          THEN (right(reference, 3)::int % 240) * 60.0 END,
         resolution_s = CASE WHEN resolved_at IS NOT NULL THEN 7200.0 END,
         opening = CASE WHEN right(reference, 2) = '00' THEN 2 ELSE 1 END""",
    # A survey for every fifth conversation, answered by most, CSAT and NPS alternately.
    """INSERT INTO conversation_surveys (conversation_id, opening, kind, sent_at, score, answered_at)
       SELECT id, 1, CASE WHEN right(reference, 2)::int % 2 = 0 THEN 'csat' ELSE 'nps' END,
              resolved_at + interval '1 hour',
              CASE WHEN right(reference, 1) <> '5' THEN right(reference, 3)::int % 6 END,
              resolved_at + interval '2 hours'
       FROM conversations WHERE resolved_at IS NOT NULL AND right(reference, 1) IN ('0', '5')""",
]


def load(url: str, n: int, config) -> float:
    seconds = growth.load(url, n, config)
    engine = make_engine(url, pool_size=1)
    started = time.monotonic()
    try:
        with engine.begin() as conn:
            for sql in KPI_SQL:
                conn.execute(text(sql))
        with engine.connect() as conn:
            conn.execution_options(isolation_level="AUTOCOMMIT").execute(text("VACUUM ANALYZE"))
    finally:
        engine.dispose()
    return seconds + time.monotonic() - started


def build_rollups(url: str, config, *, build: bool = True) -> float:
    """The backfill as an upgraded router does it: every day of the history marked (what migration
    0017 does to a history stored before it; the loader's set-based inserts bypass the router's
    marks), then the roll-up job builds the days. Returns its seconds. `build` False leaves every
    day marked: the report reads the conversations alone, as before the roll-ups."""
    from services.router import kpi_store
    from services.router.models import KpiDaily, KpiDailySurveys, KpiDay

    engine = make_engine(url, pool_size=1)
    try:
        migrate(engine)
        sessions = session_factory(engine)
        started = time.monotonic()
        with transaction(sessions) as s:
            if not build:
                for table in (KpiDaily, KpiDailySurveys, KpiDay):
                    s.execute(delete(table))
            kpi_store.mark_every_day(s)
        if build:
            kpi_store.refresh_rollups(sessions, config.business_calendar)
        seconds = time.monotonic() - started
        with engine.connect() as conn:
            conn.execution_options(isolation_level="AUTOCOMMIT").execute(
                text("VACUUM ANALYZE kpi_daily, kpi_days, kpi_dirty_days"))
        return seconds
    finally:
        engine.dispose()


def token_for(url: str, agent_id: str) -> str:
    from services.router.operations import issue_token

    engine = make_engine(url, pool_size=1)
    try:
        migrate(engine)  # a database loaded earlier may predate the newest migrations
        with transaction(session_factory(engine)) as s:
            return issue_token(s, agent_id, datetime.now(UTC))
    finally:
        engine.dispose()


def rss_mib(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    kib = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:"))
    return round(kib / 1024, 1)


def timed(client: httpx.Client, path: str, **kw) -> float:
    t = time.perf_counter()
    r = client.get(path, **kw)
    elapsed = (time.perf_counter() - t) * 1000
    assert r.status_code == 200, (path, r.status_code, r.text[:300])
    return elapsed


def login(client: httpx.Client, token: str) -> None:
    page = client.get("/inbox/login")
    csrf = re.search(r'name="csrf_token" value="([0-9a-f]+)"', page.text).group(1)
    r = client.post("/inbox/login", data={"csrf_token": csrf, "token": token, "next": "/inbox/"})
    assert r.status_code == 302, r.text[:300]


def measure(*, conversations: int = 1_000_000, repeat: int = 5, verbose: bool = True,
            database_url: str | None = None, rollups: bool = True) -> dict:
    """`database_url`: a database this module loaded before (its `load`), measured again as it is."""
    config = load_config(ROOT / "deploy" / "switchboard.yaml")
    lead = next(t.lead for t in config.teams.values())
    db_name, db_url = (None, database_url) if database_url else infra.new_database()
    vhost, broker_url = infra.new_vhost()
    services = None
    holder = None
    try:
        load_s = load(db_url, conversations, config) if db_name else 0.0
        if verbose and db_name:
            print(f"kpi bench: loaded {conversations} conversations in {load_s:.0f}s", flush=True)
        token = token_for(db_url, lead)
        rollup_s = build_rollups(db_url, config, build=rollups)
        if not rollups:  # the router's roll-up job finds the lock taken and builds nothing
            from services.router.kpi_store import ROLLUP_LOCK

            holder = make_engine(db_url, pool_size=1).connect()
            holder.execute(text("SELECT pg_advisory_lock(:key)"), {"key": ROLLUP_LOCK})
        if verbose and rollups:
            print(f"kpi bench: daily roll-ups of the whole history built in {rollup_s:.1f}s", flush=True)
        workdir = Path(tempfile.mkdtemp(prefix="kpi-bench-"))
        env, ports = services_env(broker_url=broker_url, database_url=db_url, workdir=workdir)
        services = Services(env, workdir, ports)
        services.start("router")
        pid = services.procs["router"].pid
        base = f"http://127.0.0.1:{ports['router']}"
        auth = {"Authorization": f"Bearer {token}"}
        # growth.py's history ends 8 days ago (its conversations are "old"): each period ends there.
        last = date.today() - timedelta(days=7)
        with httpx.Client(base_url=base, timeout=300) as api, httpx.Client(base_url=base, timeout=300) as page:
            login(page, token)
            timed(api, "/api/v1/conversations?limit=1", headers=auth)  # warm-up: imports, pools
            rss_before = rss_mib(pid)
            first_page = [timed(api, "/api/v1/conversations", headers=auth) for _ in range(repeat)]
            by_period: dict[str, dict] = {}
            for days in PERIODS:
                q = f"from={(last - timedelta(days=days)).isoformat()}&to={last.isoformat()}"
                kpis = [timed(api, f"/api/v1/kpis?{q}", headers=auth) for _ in range(repeat)]
                dash = [timed(page, f"/dashboard/?{q}") for _ in range(repeat)]
                body = api.get(f"/api/v1/kpis?{q}", headers=auth).json()
                by_period[str(days)] = {"kpis_p95_ms": round(percentile(kpis, 95), 1),
                                        "kpis_median_ms": round(percentile(kpis, 50), 1),
                                        "dashboard_p95_ms": round(percentile(dash, 95), 1),
                                        "conversations_in_period": body["conversations"]}
                if verbose:
                    print(f"kpi bench: {days} days ({body['conversations']} conversations): "
                          f"/api/v1/kpis p95 {by_period[str(days)]['kpis_p95_ms']} ms, "
                          f"/dashboard/ p95 {by_period[str(days)]['dashboard_p95_ms']} ms", flush=True)
            rss_after = rss_mib(pid)
        result = {
            "kpi_conversations": conversations,
            "kpi_load_seconds": round(load_s, 1) if db_name else None,
            "kpi_rollups": rollups,
            "kpi_rollup_backfill_seconds": round(rollup_s, 1) if rollups else None,
            "kpi_loadavg_at_end": [round(x, 2) for x in os.getloadavg()],
            "kpi_ms_by_period_days": by_period,
            "conversations_first_page_p95_ms": round(percentile(first_page, 95), 1),
            "router_rss_mib_before_kpis": rss_before,
            "router_rss_mib_after_kpis": rss_after,
            "router_rss_ratio_after_kpis": round(rss_after / rss_before, 3),
        }
        if verbose:
            print(f"kpi bench: first conversation page p95 {result['conversations_first_page_p95_ms']} ms; "
                  f"router RSS {rss_before} → {rss_after} MiB", flush=True)
        return result
    finally:
        if services is not None:
            services.stop_all()
        if holder is not None:
            holder.close()
            holder.engine.dispose()
        infra.drop_vhost(vhost)
        if db_name:
            infra.drop_database(db_name)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--conversations", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--database-url", help="measure a database loaded earlier by this module instead")
    parser.add_argument("--no-rollups", action="store_true",
                        help="leave every day marked: the figures from the conversations alone, as before the roll-ups")
    parser.add_argument("--out", type=Path, default=OUT, help="these keys are merged into it")
    args = parser.parse_args(argv)
    result = measure(conversations=args.conversations, repeat=args.repeat, database_url=args.database_url,
                     rollups=not args.no_rollups)
    result["kpi_machine"] = {"cpus": os.cpu_count(), "loadavg_at_start": LOADAVG_AT_START,
                             "note": "shared with other engineers' test runs at the time"}
    print(json.dumps(result, indent=2))
    merged = json.loads(args.out.read_text()) if args.out.exists() else {}
    merged.update(result)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(merged, indent=2))
    print(f"merged into {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""`switchboard`: the command line of Switchboard.

    switchboard run                      the embedded mode (one process, no broker, sandbox senders)
    switchboard simulate CHANNEL TEXT    send a correctly signed webhook to a running gateway
    switchboard config check [PATH]      validate the config (exit 2 with key paths on errors)
    switchboard classify FILE            categorise JSON Lines
    switchboard hours [--at] [--team]    open now? next opening?
    switchboard agents token AGENT_ID    a new agent API token (printed once, stored hashed; --days N: expiry)
    switchboard agents revoke AGENT_ID   the agent's token stops working (no new one)
    switchboard dlq list|replay          dead letters in RabbitMQ: see them, replay them once fixed
    switchboard agents password AGENT_ID set an agent's inbox password
    switchboard report [--from --to --team --agent --format table|csv|json]   KPIs
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

from shared.errors import ConfigError

if TYPE_CHECKING:
    from sqlalchemy.orm import Session


def _settings_and_config(config_path: str | None = None):
    from shared.config import load_config
    from shared.settings import load_settings

    overrides = {"SWITCHBOARD_CONFIG": config_path} if config_path else {}
    settings = load_settings(**overrides)
    from services.config_checks import ALL_CHECKS

    return settings, load_config(settings.config_path, ALL_CHECKS)


def cmd_run(args: argparse.Namespace) -> int:
    import threading

    from services import embedded
    from shared.log import setup_logging
    from shared.runtime import install_signal_handlers
    from shared.settings import DEV_TELEGRAM_SECRET

    setup_logging("switchboard", os.environ.get("LOG_LEVEL", "WARNING"))
    settings, config = _settings_and_config(args.config)
    port = args.port if args.port is not None else (settings.port or 8080)
    if not os.environ.get("PUBLIC_BASE_URL"):
        # Twilio signs the URL it called: locally that is this process's own address.
        settings = replace(settings, public_base_url=f"http://{args.host}:{port}")
    app = embedded.start(settings, config, host=args.host, port=port)
    app.wait_ready()
    secret = "(from TELEGRAM_WEBHOOK_SECRET)" if settings.telegram_webhook_secret else DEV_TELEGRAM_SECRET
    base = f"http://{args.host}:{app.port}"
    print(f"""Switchboard is running in embedded mode ({config.business.name}).
  webhooks   {base}/webhooks/telegram   (secret token: {secret})
             {base}/webhooks/twilio/sms, /webhooks/meta, /webhooks/email   (unset secrets: the same one)
  health     {base}/healthz  {base}/readyz
  inbox      {base}/inbox/  {base}/dashboard/   (log in with `switchboard agents token AGENT_ID`)
  database   {settings.database_url}
  senders    sandbox: every outbound message is printed here

Try it from another terminal:
  .venv/bin/switchboard simulate telegram "Where is my parcel?"
  .venv/bin/switchboard simulate sms "Gdzie jest moja paczka?" --from +48601234567   (also whatsapp, messenger, instagram, email)
  .venv/bin/switchboard simulate call "Please call me back about order 4471"   (a voicemail; --hang-up: a missed call)
Stop with Ctrl-C.""", flush=True)
    stop = threading.Event()
    install_signal_handlers(stop)
    stop.wait()
    app.shutdown()
    return 0


def cmd_simulate(args: argparse.Namespace) -> int:
    """A realistic, correctly signed webhook for a running gateway (`make run` by default: it
    accepts the development secret for every provider whose secret is unset)."""
    import httpx

    from services import simulate

    public_url = os.environ.get("PUBLIC_BASE_URL") or args.url
    try:
        if args.channel == "call":
            requests = simulate.build_call(args.text, sender=args.sender, hang_up=args.hang_up, secret=args.secret,
                                           public_url=public_url)
        else:
            requests = [simulate.build(args.channel, args.text, name=args.name, lang=args.lang, sender=args.sender,
                                       user_id=args.user_id, update_id=args.update_id, subject=args.subject,
                                       secret=args.secret, public_url=public_url)]
    except ValueError as exc:
        print(f"switchboard: {exc}", file=sys.stderr)
        return 2

    def post(request: simulate.SimulatedRequest) -> tuple[int, str]:
        url = args.url.rstrip("/") + request.path
        resp = httpx.post(url, content=request.body, headers=request.headers, timeout=10)
        print(f"POST {url} → {resp.status_code} {resp.text.strip()}")
        return resp.status_code, resp.text

    try:
        answers = simulate.play(requests, post)
    except httpx.HTTPError as exc:
        print(f"switchboard: cannot reach {args.url}: {exc} (is `make run` running?)", file=sys.stderr)
        return 1
    return 0 if 200 <= answers[-1][0] < 300 else 1


def cmd_config_check(args: argparse.Namespace) -> int:
    settings, config = _settings_and_config(args.path)
    print(f"{settings.config_path}: OK — {len(config.agents)} agents in {len(config.teams)} teams, "
          f"{len(config.categories)} categories, languages {', '.join(config.business.languages)}")
    return 0


def cmd_classify(args: argparse.Namespace) -> int:
    from services.router import classify_cmd

    return classify_cmd.main(args.rest, sys.stdout, sys.stderr)


def cmd_hours(args: argparse.Namespace) -> int:
    _, config = _settings_and_config(args.config)
    if args.team:
        if args.team not in config.teams:
            print(f"switchboard: unknown team {args.team!r} (known: {', '.join(config.teams)})", file=sys.stderr)
            return 2
        calendar = config.calendars[config.teams[args.team].calendar]
    else:
        calendar = config.business_calendar
    at = datetime.fromisoformat(args.at) if args.at else datetime.now(UTC)
    if at.tzinfo is None:
        at = at.replace(tzinfo=ZoneInfo(calendar.timezone))
    is_open = calendar.is_open(at)
    nxt = calendar.next_opening(at)
    closes = calendar.closes_at(at)
    print(json.dumps({"open": is_open, "next_opening": nxt.isoformat() if nxt else None,
                      "closes_at": closes.isoformat() if closes else None,
                      "at": at.astimezone(ZoneInfo(calendar.timezone)).isoformat(), "timezone": calendar.timezone}))
    return 0


@contextmanager
def _agents_transaction(database_url: str) -> Iterator[Session]:
    """One transaction on the migrated database, for the commands that change an agent's sign-in."""
    from shared.db import make_engine, migrate, session_factory, transaction

    engine = make_engine(database_url)
    try:
        migrate(engine)
        with transaction(session_factory(engine)) as s:
            yield s
    finally:
        engine.dispose()


def _known_agent(config, agent_id: str) -> bool:
    """Whether the config has this agent; says which it has when not."""
    if agent_id in config.agents:
        return True
    print(f"switchboard: unknown agent {agent_id!r} (known: {', '.join(config.agents)})", file=sys.stderr)
    return False


def cmd_agents_token(args: argparse.Namespace) -> int:
    from datetime import timedelta

    from services.router.operations import issue_token
    from shared.runtime import utc_now

    settings, config = _settings_and_config(args.config)
    if not _known_agent(config, args.agent_id):
        return 2
    days = args.days if args.days is not None else settings.agent_token_days
    if days is not None and days < 1:
        print("switchboard: --days must be at least 1", file=sys.stderr)
        return 2
    with _agents_transaction(settings.database_url) as s:
        token = issue_token(s, args.agent_id, utc_now(), valid_for=timedelta(days=days) if days else None)
    # Shown once: only its hash is stored. Earlier tokens of this agent no longer work, nor do the
    # inbox sessions opened with them.
    print(token)
    if days:
        print(f"(expires in {days} days)", file=sys.stderr)
    return 0


def cmd_agents_revoke(args: argparse.Namespace) -> int:
    from services.router.operations import revoke_tokens
    from shared.runtime import utc_now

    settings, _ = _settings_and_config(args.config)
    # An agent already removed from the config may still hold a token: revoke by id whatever the config says.
    with _agents_transaction(settings.database_url) as s:
        count = revoke_tokens(s, args.agent_id, utc_now())
    print(f"revoked {count} token(s) of {args.agent_id} and ended the inbox sessions opened with them")
    return 0


def cmd_agents_password(args: argparse.Namespace) -> int:
    import getpass

    from services.router.inbox import set_password
    from shared.runtime import utc_now

    settings, config = _settings_and_config(args.config)
    if not _known_agent(config, args.agent_id):
        return 2
    # From a terminal: asked twice, not echoed. Piped (scripts, tests): the first line of stdin.
    if sys.stdin.isatty():
        password = getpass.getpass("New inbox password: ")
        if getpass.getpass("Again: ") != password:
            print("switchboard: the passwords differ", file=sys.stderr)
            return 2
    else:
        password = sys.stdin.readline().rstrip("\r\n")
    try:
        with _agents_transaction(settings.database_url) as s:
            set_password(s, args.agent_id, password, utc_now())
    except ValueError as exc:
        print(f"switchboard: {exc}", file=sys.stderr)
        return 2
    print(f"inbox password set for {args.agent_id}; their open inbox sessions have ended")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    import csv

    from services.router import kpi_store
    from shared.db import make_engine, migrate, session_factory
    from shared.runtime import utc_now

    settings, config = _settings_and_config(args.config)
    try:
        scope = kpi_store.scope_for(None, config, args.team, args.agent)
        start, end = kpi_store.period(config, utc_now(), args.from_, args.to)
    except (kpi_store.ScopeError, ValueError) as exc:
        print(f"switchboard: {exc}", file=sys.stderr)
        return 2
    engine = make_engine(settings.database_url)
    try:
        migrate(engine)
        with session_factory(engine)() as s:
            result = kpi_store.report(s, config, scope, start, end, utc_now())
    finally:
        engine.dispose()
    if args.format == "json":
        print(json.dumps(result, ensure_ascii=False, indent=2))
    elif args.format == "csv":
        out = csv.writer(sys.stdout, lineterminator="\n")
        out.writerow(["figure", "value"])
        out.writerows(("" if v is None else v for v in row) for row in kpi_store.flat(result))
    else:
        rows = kpi_store.flat(result)
        width = max(len(name) for name, _ in rows)
        print(f"KPIs {result['period']['from']} – {result['period']['to']}"
              f" ({'team ' + scope.team if scope.team else 'all teams'}{', agent ' + scope.agent if scope.agent else ''})")
        for name, value in rows:
            print(f"  {name.ljust(width)}  {'—' if value is None else value}")
        if not result["surveys"]["available"]:
            print("  (CSAT, NPS and survey response rate: no survey data in this database)")
    return 0


def cmd_dlq(args: argparse.Namespace) -> int:
    from shared.bus import dlq
    from shared.settings import load_settings

    url = load_settings().broker_url
    if not url.startswith(("amqp", "pyamqp")):
        print(f"switchboard: dead-letter queues live in RabbitMQ; BROKER_URL is {url!r}", file=sys.stderr)
        return 2
    try:
        if args.dlq_command == "list":
            letters = dlq.list_dead(url, args.queue)
            if args.json:
                for letter in letters:
                    print(json.dumps(letter.summary(), ensure_ascii=False))
            else:
                print(f"{'QUEUE':<18} {'MESSAGE ID':<38} {'TYPE':<24} {'ATTEMPTS':>8}  ERROR")
                for d in letters:
                    print(f"{d.queue:<18} {d.message_id or '-':<38} {d.type or '-':<24} {d.attempts:>8}  "
                          f"{' '.join((d.error or '-').split())[:200]}")
                print(f"{len(letters)} dead letter(s)")
            return 0
        if not args.all and not args.id:
            print("switchboard: dlq replay needs --id MESSAGE_ID or --all", file=sys.stderr)
            return 2
        replayed = dlq.replay(url, args.queue, message_id=args.id, everything=args.all)
    except dlq.UnknownQueue as exc:
        print(f"switchboard: {exc}", file=sys.stderr)
        return 2
    for letter in replayed:
        print(f"replayed {letter.message_id} ({letter.type or 'unknown type'}) to {letter.queue}")
    if args.id and not replayed:
        print(f"switchboard: no dead letter with message id {args.id!r}", file=sys.stderr)
        return 1
    return 0


class _Simulated:
    """The channels `switchboard simulate` offers (services/simulate.py CHANNELS), read only when
    argparse checks or shows them: importing them costs every other command a tenth of a second."""

    def _channels(self) -> tuple[str, ...]:
        from services.simulate import CHANNELS

        return CHANNELS

    def __contains__(self, channel: object) -> bool:
        return channel in self._channels()

    def __iter__(self) -> Iterator[str]:
        return iter(self._channels())


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="switchboard", description="Multi-channel customer support.")
    sub = p.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run the embedded mode (one process, no broker needed)")
    run.add_argument("--config", help="YAML config (default: $SWITCHBOARD_CONFIG or deploy/switchboard.yaml)")
    run.add_argument("--host", default="127.0.0.1")
    run.add_argument("--port", type=int, default=None, help="default: $PORT or 8080")
    run.set_defaults(func=cmd_run)

    sim = sub.add_parser("simulate", help="send a realistic signed webhook to a running gateway")
    # A metavar: without one argparse lists the choices as soon as the argument is added.
    sim.add_argument("channel", choices=_Simulated(), metavar="CHANNEL", help="%(choices)s")
    sim.add_argument("text", help="the message; call: the voicemail's transcript")
    sim.add_argument("--url", default=os.environ.get("SWITCHBOARD_URL", "http://127.0.0.1:8080"))
    sim.add_argument("--secret", default=None, help="the provider's webhook secret (default: from the"
                     " environment, else the development secret `make run` accepts)")
    sim.add_argument("--from", dest="sender", default=None,
                     help="the customer: a phone number (sms, whatsapp), an e-mail address, a page-scoped id")
    sim.add_argument("--user-id", type=int, default=424242, help="telegram: the customer's user id")
    sim.add_argument("--name", default="Alex Customer")
    sim.add_argument("--lang", default="en")
    sim.add_argument("--subject", default=None, help="email: the subject")
    sim.add_argument("--update-id", type=int, default=None, help="telegram: the update id (repeat it to redeliver)")
    sim.add_argument("--hang-up", action="store_true", help="call: the caller hangs up before the beep")
    sim.set_defaults(func=cmd_simulate)

    cfg = sub.add_parser("config", help="configuration tools")
    cfg_sub = cfg.add_subparsers(dest="config_command", required=True)
    check = cfg_sub.add_parser("check", help="validate the config without starting anything")
    check.add_argument("path", nargs="?", default=None)
    check.set_defaults(func=cmd_config_check)

    cls = sub.add_parser("classify", help="categorise JSON Lines (text, subject, channel, lang)", add_help=False)
    cls.add_argument("rest", nargs=argparse.REMAINDER)
    cls.set_defaults(func=cmd_classify)

    hours = sub.add_parser("hours", help="is the business open? when does it open next?")
    hours.add_argument("--at", help="ISO-8601 time (default: now); without an offset, the calendar's zone")
    hours.add_argument("--team", default=None)
    hours.add_argument("--config", default=None)
    hours.set_defaults(func=cmd_hours)

    agents = sub.add_parser("agents", help="agents' API access")
    agents_sub = agents.add_subparsers(dest="agents_command", required=True)
    token = agents_sub.add_parser("token", help="print a new API token for an agent (earlier ones stop working)")
    token.add_argument("agent_id")
    token.add_argument("--days", type=int, default=None,
                       help="the token expires after this many days (default: AGENT_TOKEN_DAYS, else never)")
    token.add_argument("--config", default=None)
    token.set_defaults(func=cmd_agents_token)
    revoke = agents_sub.add_parser("revoke", help="the agent's API token stops working, no new one is issued")
    revoke.add_argument("agent_id")
    revoke.add_argument("--config", default=None)
    revoke.set_defaults(func=cmd_agents_revoke)
    password = agents_sub.add_parser("password", help="set an agent's inbox password (asked, or the first line of stdin)")
    password.add_argument("agent_id")
    password.add_argument("--config", default=None)
    password.set_defaults(func=cmd_agents_password)

    report = sub.add_parser("report", help="KPIs over a period (first response, promises, CSAT, arrivals vs staffing)")
    report.add_argument("--from", dest="from_", default=None, help="date or ISO time (default: 7 days before --to)")
    report.add_argument("--to", default=None, help="date or ISO time, exclusive (default: now)")
    report.add_argument("--team", default=None)
    report.add_argument("--agent", default=None)
    report.add_argument("--format", choices=["table", "csv", "json"], default="table")
    report.add_argument("--config", default=None)
    report.set_defaults(func=cmd_report)

    dead = sub.add_parser("dlq", help="dead-letter queues: list them, replay messages once the cause is fixed")
    dead_sub = dead.add_subparsers(dest="dlq_command", required=True)
    dlq_list = dead_sub.add_parser("list", help="message id, type, last error and attempts of every dead letter")
    dlq_list.add_argument("--queue", default=None, help="a work queue (router.inbound, notifier.events); default all")
    dlq_list.add_argument("--json", action="store_true", help="one JSON object per line")
    dlq_list.set_defaults(func=cmd_dlq)
    dlq_replay = dead_sub.add_parser("replay", help="republish to the work queue, then remove from the DLQ")
    dlq_replay.add_argument("--queue", default=None)
    which = dlq_replay.add_mutually_exclusive_group()
    which.add_argument("--id", default=None, help="the message id to replay")
    which.add_argument("--all", action="store_true", help="every dead letter (of --queue)")
    dlq_replay.set_defaults(func=cmd_dlq)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return args.func(args)
    except ConfigError as exc:
        print(exc.render(), file=sys.stderr)
        return exc.exit_code
    except BrokenPipeError:
        # The reader went away (`switchboard classify … | head`): that is the reader's choice, not an
        # error worth a traceback. Point stdout at /dev/null so the interpreter's final flush cannot
        # raise again, and exit as a process killed by SIGPIPE would (128 + 13).
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141


if __name__ == "__main__":
    sys.exit(main())

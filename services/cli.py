"""`switchboard`: the command line of Switchboard.

    switchboard run                      the embedded mode (one process, no broker, sandbox senders)
    switchboard simulate telegram TEXT   send a correctly signed webhook to a running gateway
    switchboard config check [PATH]      validate the config (exit 2 with key paths on errors)
    switchboard classify FILE            categorise JSON Lines
    switchboard hours [--at] [--team]    open now? next opening?
    switchboard agents token AGENT_ID    a new agent API token (printed once, stored hashed)
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from shared.errors import ConfigError


def _settings_and_config(config_path: str | None = None):
    from shared.config import load_config
    from shared.settings import load_settings

    overrides = {"SWITCHBOARD_CONFIG": config_path} if config_path else {}
    settings = load_settings(**overrides)
    return settings, load_config(settings.config_path)


def cmd_run(args: argparse.Namespace) -> int:
    import threading

    from services import embedded
    from shared.log import setup_logging
    from shared.runtime import install_signal_handlers
    from shared.settings import DEV_TELEGRAM_SECRET

    setup_logging("switchboard", os.environ.get("LOG_LEVEL", "WARNING"))
    settings, config = _settings_and_config(args.config)
    app = embedded.start(settings, config, host=args.host, port=args.port)
    app.wait_ready()
    secret = "(from TELEGRAM_WEBHOOK_SECRET)" if settings.telegram_webhook_secret else DEV_TELEGRAM_SECRET
    base = f"http://{args.host}:{app.port}"
    print(f"""Switchboard is running in embedded mode ({config.business.name}).
  webhooks   {base}/webhooks/telegram   (secret token: {secret})
  health     {base}/healthz  {base}/readyz
  database   {settings.database_url}
  senders    sandbox: every outbound message is printed here

Try it from another terminal:
  .venv/bin/switchboard simulate telegram "Where is my parcel?"
Stop with Ctrl-C.""", flush=True)
    stop = threading.Event()
    install_signal_handlers(stop)
    stop.wait()
    app.shutdown()
    return 0


def cmd_simulate(args: argparse.Namespace) -> int:
    import httpx

    from shared.settings import DEV_TELEGRAM_SECRET

    if args.channel != "telegram":
        print(f"switchboard: simulate supports: telegram (not {args.channel!r} yet)", file=sys.stderr)
        return 2
    secret = args.secret or os.environ.get("TELEGRAM_WEBHOOK_SECRET") or DEV_TELEGRAM_SECRET
    update_id = args.update_id if args.update_id is not None else int(time.time() * 1000) % 2_000_000_000
    first, _, last = args.name.partition(" ")
    sender = {"id": args.user_id, "is_bot": False, "first_name": first, "language_code": args.lang}
    if last:
        sender["last_name"] = last
    update = {"update_id": update_id, "message": {
        "message_id": update_id % 100000, "date": int(time.time()), "text": args.text,
        "from": sender, "chat": {"id": args.user_id, "type": "private", "first_name": first},
    }}
    url = args.url.rstrip("/") + "/webhooks/telegram"
    try:
        resp = httpx.post(url, json=update, headers={"X-Telegram-Bot-Api-Secret-Token": secret}, timeout=10)
    except httpx.HTTPError as exc:
        print(f"switchboard: cannot reach {url}: {exc} (is `make run` running?)", file=sys.stderr)
        return 1
    print(f"POST {url} → {resp.status_code} {resp.text.strip()}")
    return 0 if resp.is_success else 1


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


def cmd_agents_token(args: argparse.Namespace) -> int:
    from services.router.operations import issue_token
    from shared.db import make_engine, migrate, session_factory, transaction
    from shared.runtime import utc_now

    settings, config = _settings_and_config(args.config)
    if args.agent_id not in config.agents:
        print(f"switchboard: unknown agent {args.agent_id!r} (known: {', '.join(config.agents)})", file=sys.stderr)
        return 2
    engine = make_engine(settings.database_url)
    try:
        migrate(engine)
        with transaction(session_factory(engine)) as s:
            token = issue_token(s, args.agent_id, utc_now())
    finally:
        engine.dispose()
    # Shown once: only its hash is stored. Earlier tokens of this agent no longer work.
    print(token)
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="switchboard", description="Multi-channel customer support.")
    sub = p.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run the embedded mode (one process, no broker needed)")
    run.add_argument("--config", help="YAML config (default: $SWITCHBOARD_CONFIG or deploy/switchboard.yaml)")
    run.add_argument("--host", default="127.0.0.1")
    run.add_argument("--port", type=int, default=None, help="default: $PORT or 8080")
    run.set_defaults(func=cmd_run)

    sim = sub.add_parser("simulate", help="send a realistic signed webhook to a running gateway")
    sim.add_argument("channel", choices=["telegram"])
    sim.add_argument("text")
    sim.add_argument("--url", default=os.environ.get("SWITCHBOARD_URL", "http://127.0.0.1:8080"))
    sim.add_argument("--secret", default=None)
    sim.add_argument("--user-id", type=int, default=424242)
    sim.add_argument("--name", default="Alex Customer")
    sim.add_argument("--lang", default="en")
    sim.add_argument("--update-id", type=int, default=None)
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
    token.add_argument("--config", default=None)
    token.set_defaults(func=cmd_agents_token)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return args.func(args)
    except ConfigError as exc:
        print(exc.render(), file=sys.stderr)
        return exc.exit_code


if __name__ == "__main__":
    sys.exit(main())

"""Process plumbing shared by the services: start-up errors, signals, threads, clean shutdown.

SIGTERM and SIGINT set one stop event: consumers stop taking messages, finish the one in hand
(it is acked or returned to the queue), the web server closes, connections close.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

from shared.config import Config, ConfigCheck, load_config
from shared.errors import ConfigError
from shared.settings import Settings, load_settings

log = logging.getLogger(__name__)


def utc_now() -> datetime:
    """The one clock of the production wiring; domain code receives times as parameters."""
    return datetime.now(UTC)


def load_or_exit(checks: Sequence[ConfigCheck] = (), **overrides: str) -> tuple[Settings, Config]:
    """`checks`: the service's own checks of the config (shared.config.ConfigCheck)."""
    try:
        settings = load_settings(**overrides)
        config = load_config(settings.config_path, checks)
    except ConfigError as exc:
        print(exc.render(), file=sys.stderr)
        raise SystemExit(exc.exit_code) from None
    return settings, config


def install_signal_handlers(stop: threading.Event) -> None:
    def _stop(signum, _frame) -> None:
        log.info("received %s, shutting down", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)


def start_thread(target: Callable[[], object], name: str) -> threading.Thread:  # a result is dropped
    t = threading.Thread(target=target, name=name, daemon=True)
    t.start()
    return t

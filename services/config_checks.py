"""Every service's checks of the config, for the loaders that speak for all of them (the CLI, the
embedded mode, tests): a top-level module of services/, so it may import each service."""

from __future__ import annotations

from services.notifier.texts import check_config_templates
from services.router.macros import check_config_macros
from shared.config import ConfigCheck

#: In the order they ran before they were injected: templates, then macros.
ALL_CHECKS: tuple[ConfigCheck, ...] = (check_config_templates, check_config_macros)

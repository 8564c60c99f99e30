"""The words Switchboard sends: customer acknowledgements, redirect notes, surveys and agent notices.

Every text exists in en, ru, bg, pl, lt, uk and de. The wording lives in Jinja2 templates, one
folder per language (``services/notifier/templates/ru/ack.txt.j2``), next to a ``language.yaml``
with the words the Python side needs to build dates, weekday ranges, category lines and forms of
address. A business can replace any template from its YAML config.

One module per job:

* ``customer.py``: what a customer reads (acknowledgement, redirect, survey question and thanks)
  and the SMS length it must fit;
* ``agent.py``: the notices agents and leads read;
* ``words.py``: each language's words and how a customer's name is used (the vocative rules);
* ``templating.py``: loading and rendering the templates, a business's overrides first;
* ``overrides.py``: which templates a business may override, and the config check at start.

This package's names below are the notifier's way in; import them from here.
"""

from __future__ import annotations

from services.notifier.texts.agent import AGENT_NOTICE_KINDS, agent_notice_fields, render_agent_notice
from services.notifier.texts.customer import (
    SMS_LIMIT,
    AckContext,
    render_ack,
    render_redirect,
    render_survey_question,
    render_survey_thanks,
)
from services.notifier.texts.overrides import check_config_templates, template_names, validate_overrides
from services.notifier.texts.templating import TemplateError

# Re-exported as before the split (callers and tests import them from here); their home is shared/.
from shared.locale import LANGUAGES, format_weekly_hours, format_when
from shared.vocabulary import CATEGORIES

__all__ = [
    "AGENT_NOTICE_KINDS",
    "CATEGORIES",
    "LANGUAGES",
    "SMS_LIMIT",
    "AckContext",
    "TemplateError",
    "check_config_templates",
    "format_weekly_hours",
    "format_when",
    "render_ack",
    "agent_notice_fields",
    "render_agent_notice",
    "render_redirect",
    "render_survey_question",
    "render_survey_thanks",
    "template_names",
    "validate_overrides",
]

"""Template loading: the Jinja2 environments the texts render with, and a business's overrides.

The wording lives in Jinja2 templates, one folder per language (``templates/ru/ack.txt.j2``). A
business can replace any template from its YAML config (``templates: {"ru/ack.txt.j2": "..."}``);
an environment is built per set of overrides, so one business's wording never leaks into another's.
Nothing here knows which texts exist or what they say (customer.py, agent.py, overrides.py do).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import jinja2

TEMPLATE_DIR = Path(__file__).resolve().parent.parent / "templates"


class TemplateError(jinja2.TemplateError):
    """A template (usually a business's override) that does not compile or does not render.

    ``problems`` lists (template name, what is wrong) so a config checker can report each one
    under its own key path; the message names them all.
    """

    def __init__(self, problems: Sequence[tuple[str, str]]) -> None:
        self.problems = list(problems)
        self.template_name = self.problems[0][0] if self.problems else None
        super().__init__("; ".join(f"template {name}: {what}" for name, what in self.problems))


def _new_environment(loader: jinja2.BaseLoader) -> jinja2.Environment:
    # Plain-text channels: escaping would put "&amp;" into an SMS. StrictUndefined turns a typo in
    # a variable name into an error instead of a silently missing sentence.
    return jinja2.Environment(
        loader=loader,
        undefined=jinja2.StrictUndefined,
        autoescape=False,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=False,
        auto_reload=False,
    )


@functools.cache
def base_environment() -> jinja2.Environment:
    """The packaged templates alone."""
    return _new_environment(jinja2.FileSystemLoader(TEMPLATE_DIR))


@functools.lru_cache(maxsize=32)
def environment(overrides: tuple[tuple[str, str], ...]) -> jinja2.Environment:
    """An environment for one set of overrides, keyed by their content so none leaks elsewhere.

    Overrides shadow the packaged templates by name, including for ``{% include %}``; they are all
    compiled here so a syntax error surfaces once, naming its template.
    """
    if not overrides:
        return base_environment()
    env = _new_environment(jinja2.ChoiceLoader([jinja2.DictLoader(dict(overrides)),
                                                jinja2.FileSystemLoader(TEMPLATE_DIR)]))
    problems = []
    for name, _ in overrides:
        try:
            env.get_template(name)
        except jinja2.TemplateSyntaxError as exc:
            problems.append((name, f"line {exc.lineno}: {exc.message}"))
    if problems:
        raise TemplateError(problems)
    return env


def render_template(name: str, context: Mapping[str, Any], overrides: Mapping[str, str] | None) -> str:
    """Template ``name`` ("ru/ack.txt.j2") rendered with ``context``, a business's overrides first."""
    env = environment(tuple(sorted((overrides or {}).items())))
    try:
        text = env.get_template(name).render(context)
    except jinja2.TemplateSyntaxError as exc:
        raise TemplateError([(name, f"line {exc.lineno}: {exc.message}")]) from exc
    except jinja2.UndefinedError as exc:
        raise TemplateError([(name, str(exc))]) from exc
    return _tidy(text)


def _tidy(text: str) -> str:
    """Template whitespace is for translators' readability; the reader gets no stray blank lines.

    A date phrase may end in an abbreviation ("2027 г.", "13:00 val."); at the end of a sentence
    that abbreviation's dot is the full stop, so "val.." becomes "val.".
    """
    lines = [line.rstrip() for line in text.strip().splitlines()]
    text = re.sub(r"\n{3,}", "\n\n", "\n".join(lines))
    return re.sub(r"(?<=[^\W\d_])\.\.(?!\.)", ".", text)

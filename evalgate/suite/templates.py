"""Jinja2 templates for prompts and grader values (compiled once, strict undefined).

Templates run in jinja2's immutable sandbox: a dataset row often holds text harvested
from users or logs, and a row value such as
``{{ cycler.__init__.__globals__.os.popen('...') }}`` must be an error, never a command.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import jinja2


@functools.cache
def _environment() -> jinja2.Environment:
    import jinja2
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    # Prompts are plain text, not HTML: no autoescape. StrictUndefined turns a missing
    # variable into an error instead of a silently empty prompt. keep_trailing_newline
    # so a template renders exactly what the user wrote. The sandbox refuses access to
    # private attributes (``__init__``, ``__globals__``) and to methods that mutate.
    return ImmutableSandboxedEnvironment(
        undefined=jinja2.StrictUndefined, keep_trailing_newline=True
    )


@functools.lru_cache(maxsize=4096)
def _compile(source: str) -> jinja2.Template:
    return _environment().from_string(source)


def render(source: str, variables: Mapping[str, Any]) -> str:
    """Renders ``source`` with ``variables``; strings without ``{`` are returned as is."""
    if "{" not in source:
        return source
    return _compile(source).render(variables)


def variables_used(source: str) -> set[str]:
    """Names a template reads from its context (raises jinja2.TemplateSyntaxError)."""
    if "{" not in source:
        return set()
    from jinja2 import meta

    return set(meta.find_undeclared_variables(_environment().parse(source)))

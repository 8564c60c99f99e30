"""The gateway's OpenAPI document: its own part (openapi.yaml) plus each registered adapter's.

An adapter's part lives next to its module (`channels/telegram.py` → `channels/telegram.openapi.yaml`):
`paths` (the item of the adapter's `webhook.path`) and the `components` it brings (its security
scheme, its schemas). Only the registered adapters' paths are documented, so the document follows
`build_adapters` the way the served routes do, and a new channel edits no shared file."""

from __future__ import annotations

import sys
from collections.abc import Iterable
from copy import deepcopy
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from services.gateway.channels import InboundAdapter

BASE_PATH = Path(__file__).with_name("openapi.yaml")


@cache
def _load(path: Path) -> dict[str, Any]:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def fragment_path(adapter: InboundAdapter) -> Path:
    """Where the adapter's OpenAPI part is: beside the module that defines its class."""
    module_file = sys.modules[type(adapter).__module__].__file__
    assert module_file is not None
    return Path(module_file).with_suffix(".openapi.yaml")


def _merge_components(into: dict[str, Any], components: dict[str, Any], source: Path) -> None:
    for section, entries in components.items():
        target = into.setdefault(section, {})
        for name, value in entries.items():
            # Two parts may not give one name two meanings: a $ref would then depend on the order.
            if name in target and target[name] != value:
                raise ValueError(f"{source.name}: components/{section}/{name} differs from another part's")
            target[name] = value


def assemble(adapters: Iterable[InboundAdapter]) -> dict[str, Any]:
    """The document the gateway serves for these adapters: the base with each adapter's path item
    and its module's components. A registered adapter without its path in its part is an error."""
    document = deepcopy(_load(BASE_PATH))
    components = document.setdefault("components", {})
    webhook_paths: dict[str, Any] = {}
    for adapter in adapters:
        source = fragment_path(adapter)
        if not source.exists():
            raise ValueError(f"{type(adapter).__name__} has no OpenAPI part: {source} is missing")
        fragment = _load(source)
        _merge_components(components, deepcopy(fragment.get("components", {})), source)
        path = adapter.webhook.path
        try:
            webhook_paths[path] = deepcopy(fragment["paths"][path])
        except KeyError:
            raise ValueError(f"{source.name} does not document {type(adapter).__name__}'s path {path}") from None
    document["paths"] = {**webhook_paths, **document.get("paths", {})}
    return document

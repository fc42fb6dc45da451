"""Hydra's command-line overrides as text: the one parser of an override's key.

An override is `key=value`, `+key=value` (add), `++key=value` (add or set) or `~key` (delete);
Hydra's own parser needs a config loader, so code that only sorts overrides by key (the resume
hint, the launchers, the search and its summary) reads them here. No torch, no Hydra.
"""

from __future__ import annotations

RESUME = "resume=true"


def key_of(override: str) -> str:
    """The config key an override is about: `+data.root=/x` -> `data.root`, `~seed` -> `seed`."""
    return override.split("=", 1)[0].lstrip("+~")


def sets_key(override: str, key: str) -> bool:
    """Whether the override (`key=v`, `+key=v`, `++key=v`, `~key`) is about `key`."""
    return key_of(override) == key


def with_resume(overrides: list[str]) -> list[str]:
    """The overrides with `resume=true` in place of any `resume` override they had."""
    return [override for override in overrides if not sets_key(override, "resume")] + [RESUME]

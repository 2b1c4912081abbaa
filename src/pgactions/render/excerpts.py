"""Text from the user (a name, a template, an exception's words) as error messages show it."""

from __future__ import annotations

__all__ = ["shown"]


def shown(text: str, limit: int = 100) -> str:
    """*text* for an error message: repr'd, cut after *limit* characters."""
    return repr(text) if len(text) <= limit else repr(text[:limit]) + f"… ({len(text):,} characters)"

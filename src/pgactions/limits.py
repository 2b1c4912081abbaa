"""Limits a host sets for every action: timeouts and the output cap."""

from __future__ import annotations

from dataclasses import dataclass

from pgactions.spec.errors import ActionError

__all__ = ["Limits"]


@dataclass(frozen=True)
class Limits:
    """Host-configurable limits.  An input's ``timeout`` may not exceed ``max_timeout``."""

    default_timeout: float = 60.0
    max_timeout: float = 60.0
    max_result_bytes: int = 10 * 1024 * 1024
    numeric_as_number: bool = False

    def timeout_for(self, requested: float | None, profile_default: float | None = None,
                    action_default: float | None = None) -> float:
        """The action's own timeout input, else the connection's statementTimeout, else the
        manifest's ``defaultTimeout`` (never above the host's ``default_timeout``)."""
        if requested is None and profile_default is not None:
            if profile_default > self.max_timeout:
                raise ActionError("INVALID_INPUT", f"the connection's statementTimeout {profile_default:g}s is "
                                                   f"above the maximum of {self.max_timeout:g}s",
                                  extra={"field": "connection.statementTimeout"})
            return float(profile_default)
        if requested is None:
            default = self.default_timeout if action_default is None else min(action_default, self.default_timeout)
            return min(default, self.max_timeout)
        if requested > self.max_timeout:
            raise ActionError("INVALID_INPUT", f"timeout {requested:g}s is above the maximum of "
                                               f"{self.max_timeout:g}s", extra={"field": "timeout"})
        return float(requested)

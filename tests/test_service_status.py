"""The one binding of error codes to HTTP statuses (docs/errors.md prints it)."""

from __future__ import annotations

import pytest

from pgactions.service.status import CONNECTION_CODES, HTTP_STATUS, http_status
from pgactions.spec.errors import ERROR_CATALOG


def test_every_code_has_exactly_one_status() -> None:
    assert set(HTTP_STATUS) == set(ERROR_CATALOG)


@pytest.mark.parametrize("code", sorted(ERROR_CATALOG))
def test_status_follows_the_rules(code: str) -> None:
    status = http_status(code)
    spec = ERROR_CATALOG[code]
    if code in CONNECTION_CODES:
        assert status == (503 if spec.retryable else 502)
    elif code.startswith("UNDEFINED_") or code.startswith("UNKNOWN_"):
        assert status == 404
    elif code.endswith("_VIOLATION") and code != "READ_ONLY_VIOLATION":
        assert status == 409  # integrity errors
    else:
        assert 400 <= status < 600


@pytest.mark.parametrize(("code", "status"), [
    ("INVALID_INPUT", 422), ("INVALID_CONNECTION", 422), ("TEMPLATE_ERROR", 422), ("INVALID_VALUE", 422),
    ("UNKNOWN_ACTION", 404), ("UNDEFINED_TABLE", 404), ("UNIQUE_VIOLATION", 409), ("PERMISSION_DENIED", 403),
    ("QUERY_TIMEOUT", 504), ("RESULT_TOO_LARGE", 413), ("CANCELLED", 499), ("UNAUTHORIZED", 401),
    ("FORBIDDEN", 403), ("UNKNOWN_CONNECTION", 404), ("REQUEST_TOO_LARGE", 413), ("REQUEST_TIMEOUT", 408), ("REPLAY_UNAVAILABLE", 409), ("RATE_LIMITED", 429),
    ("CONNECTION_REFUSED", 503), ("AUTHENTICATION_FAILED", 502),
])
def test_the_issue_s_table(code: str, status: int) -> None:
    assert http_status(code) == status

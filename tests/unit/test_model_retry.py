from __future__ import annotations

import pytest

from tests.unit.model_builders import doc, error_at
from xds_server.model import RetryPolicySpec, parse_document
from xds_server.model.duration import Duration
from xds_server.model.retry import DEFAULT_RETRY_ON, ResetHeaderFormat, RetryOn


def policy(**spec: object) -> RetryPolicySpec:
    parsed = parse_document(doc("RetryPolicy", "default", **spec)).spec
    assert isinstance(parsed, RetryPolicySpec)
    return parsed


def test_defaults() -> None:
    spec = policy()
    assert spec.retry_on == DEFAULT_RETRY_ON
    assert spec.num_retries == 1
    assert spec.backoff is None
    assert spec.retriable_status_codes == ()


def test_every_condition_is_accepted() -> None:
    every = [condition.value for condition in RetryOn]
    assert policy(retry_on=every).retry_on == tuple(RetryOn)


def test_status_codes_imply_retry_on_condition() -> None:
    spec = policy(retry_on=["5xx"], retriable_status_codes=[503, 502, 503])
    assert spec.retry_on == (RetryOn.FIVE_XX, RetryOn.RETRIABLE_STATUS_CODES)
    assert spec.retriable_status_codes == (502, 503)
    # Already there: not added twice; round trip stays equal.
    again = policy(**spec.model_dump(mode="json"))
    assert again == spec


def test_duplicate_conditions_are_dropped() -> None:
    assert policy(retry_on=["reset", "reset", "5xx"]).retry_on == (RetryOn.RESET, RetryOn.FIVE_XX)


def test_backoff_max_defaults_to_ten_times_base() -> None:
    spec = policy(backoff={"base_interval": "25ms"})
    assert spec.backoff is not None
    assert spec.backoff.effective_max_interval == Duration(250)


def test_full_policy() -> None:
    spec = policy(
        retry_on=["5xx"],
        num_retries=10,
        per_try_timeout="2s",
        backoff={"base_interval": "100ms", "max_interval": "1s"},
        retry_host_other=True,
        rate_limited_backoff={
            "reset_headers": [
                {"name": "Retry-After"},
                {"name": "X-RateLimit-Reset", "format": "unix_timestamp"},
            ],
            "max_interval": "1m",
        },
    )
    assert spec.rate_limited_backoff is not None
    formats = [header.format for header in spec.rate_limited_backoff.reset_headers]
    assert formats == [ResetHeaderFormat.SECONDS, ResetHeaderFormat.UNIX_TIMESTAMP]


@pytest.mark.parametrize(
    ("spec", "field", "reason"),
    [
        ({"retry_on": ["5xx", "sometimes"]}, "spec.retry_on[1]", "'5xx'"),
        ({"retry_on": []}, "spec.retry_on", "at least one condition"),
        ({"num_retries": 11}, "spec.num_retries", "less than or equal to 10"),
        ({"num_retries": -1}, "spec.num_retries", "greater than or equal to 0"),
        ({"per_try_timeout": "2"}, "spec.per_try_timeout", "not a valid duration"),
        ({"backoff": {}}, "spec.backoff.base_interval", "Field required"),
        ({"backoff": {"base_interval": "0s"}}, "spec.backoff.base_interval", "longer than 0s"),
        (
            {"backoff": {"base_interval": "1s", "max_interval": "500ms"}},
            "spec.backoff.max_interval",
            "must not be shorter than base_interval (1s)",
        ),
        ({"retriable_status_codes": [99]}, "spec.retriable_status_codes", "99 is not an HTTP"),
        ({"retriable_status_codes": [600]}, "spec.retriable_status_codes", "600 is not an HTTP"),
        ({"retry_host_other": "yes please"}, "spec.retry_host_other", "boolean"),
        (
            {"rate_limited_backoff": {"reset_headers": []}},
            "spec.rate_limited_backoff.reset_headers",
            "at least one item",
        ),
        (
            {"rate_limited_backoff": {"reset_headers": [{"name": "Retry-After", "format": "ms"}]}},
            "spec.rate_limited_backoff.reset_headers[0].format",
            "'seconds'",
        ),
        (
            {"rate_limited_backoff": {"reset_headers": [{"name": "bad header"}]}},
            "spec.rate_limited_backoff.reset_headers[0].name",
            "not a valid header name",
        ),
        ({"retries": 3}, "spec.retries", "Extra inputs are not permitted"),
    ],
)
def test_invalid(spec: dict[str, object], field: str, reason: str) -> None:
    assert reason in error_at(doc("RetryPolicy", "default", **spec), field)

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError

from xds_server.model.duration import Duration, PositiveDuration


class Holder(BaseModel):
    value: Duration
    positive: PositiveDuration | None = None


@pytest.mark.parametrize(
    ("text", "milliseconds", "canonical"),
    [
        ("250ms", 250, "250ms"),
        ("5s", 5_000, "5s"),
        ("1m", 60_000, "1m"),
        ("1h", 3_600_000, "1h"),
        ("90s", 90_000, "90s"),
        ("1m30s", 90_000, "90s"),
        ("60s", 60_000, "1m"),
        ("1.5s", 1_500, "1500ms"),
        ("0.25s", 250, "250ms"),
        ("0s", 0, "0s"),
        ("0ms", 0, "0s"),
        ("1000ms", 1_000, "1s"),
        ("2h30m", 9_000_000, "150m"),
    ],
)
def test_parse_and_canonical_form(text: str, milliseconds: int, canonical: str) -> None:
    duration = Duration.parse(text)
    assert duration.milliseconds == milliseconds
    assert str(duration) == canonical
    assert Duration.parse(canonical) == duration


@pytest.mark.parametrize("text", ["", "5", "s", "5x", "-1s", "1h 2m", "1.0001s", " 5s", "5S", "1d"])
def test_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        Duration.parse(text)


def test_pydantic_field_round_trips_as_string() -> None:
    holder = Holder.model_validate({"value": "1m30s"})
    assert holder.value == Duration(90_000)
    assert holder.model_dump() == {"value": "90s", "positive": None}
    assert holder.model_dump_json() == '{"value":"90s","positive":null}'
    assert Holder.model_validate(holder.model_dump()) == holder


def test_errors_name_the_field_and_the_format() -> None:
    with pytest.raises(ValidationError) as caught:
        Holder.model_validate({"value": 5})
    (error,) = caught.value.errors()
    assert error["loc"] == ("value",)
    assert "'250ms'" in error["msg"]
    with pytest.raises(ValidationError) as caught:
        Holder.model_validate({"value": "5 s"})
    assert "'5 s' is not a valid duration" in caught.value.errors()[0]["msg"]


def test_positive_duration_rejects_zero() -> None:
    with pytest.raises(ValidationError) as caught:
        Holder.model_validate({"value": "1s", "positive": "0s"})
    (error,) = caught.value.errors()
    assert error["loc"] == ("positive",)
    assert error["msg"] == "must be longer than 0s"


def test_too_long_for_envoy() -> None:
    with pytest.raises(ValueError, match="10,000 years"):
        Duration.parse("100000000h")


def test_protobuf_parts_and_json_schema() -> None:
    assert Duration(1_500).seconds_and_nanos == (1, 500_000_000)
    schema = Holder.model_json_schema()
    assert schema["properties"]["value"]["type"] == "string"


@given(st.integers(min_value=0, max_value=10**12))
def test_canonical_string_round_trips(milliseconds: int) -> None:
    duration = Duration(milliseconds)
    assert Duration.parse(str(duration)) == duration

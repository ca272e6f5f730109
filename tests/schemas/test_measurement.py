from __future__ import annotations

import orjson
import pytest

from plantstream.schemas.measurement import MAX_MESSAGE_BYTES, DeadLetter, Measurement, decode, parse_ts

GOOD = {"ts": 1763791200000, "machine": "press-01", "metric": "good_count", "value": 4501,
        "site": "seattle", "line": "line-1", "unit": "count", "source": "opcua", "quality": "good"}


def test_the_architecture_example_decodes_to_every_field() -> None:
    m = decode(orjson.dumps(GOOD))
    assert m == Measurement(1763791200000, "press-01", "good_count", 4501, "seattle", "line-1",
                            "count", "opcua", "good")
    assert decode(m.to_json()) == m


@pytest.mark.parametrize("value", [4501, 12.5, "P-100", True])
def test_values_may_be_number_string_or_bool(value: object) -> None:
    m = decode(orjson.dumps({**GOOD, "metric": "part_number", "value": value}))
    assert isinstance(m, Measurement)
    assert m.value == value


@pytest.mark.parametrize("metric", ["good_count", "reject_count", "total_count", "good_parts", "reject_parts"])
@pytest.mark.parametrize("value", ["many", "", True])
def test_a_part_count_that_is_not_a_number_is_dead_lettered(metric: str, value: object) -> None:
    bad = decode(orjson.dumps({**GOOD, "metric": metric, "value": value}))
    assert isinstance(bad, DeadLetter)
    assert bad.reason.startswith(f"field 'value' of {metric} must be a number")
    assert isinstance(decode(orjson.dumps({**GOOD, "metric": metric, "value": 7.0})), Measurement)


def test_optional_fields_default() -> None:
    m = decode(b'{"ts": 1763791200000, "machine": "m", "metric": "temperature_c", "value": 1.5}')
    assert isinstance(m, Measurement)
    assert (m.site, m.line, m.quality) == ("", "", "good")


@pytest.mark.parametrize(("raw", "reason"), [
    (b"not json", "not JSON"),
    (b"[1, 2]", "not a JSON object (got list)"),
    (b'{"ts": 1763791200000, "metric": "x", "value": 1}', "missing field 'machine'"),
    (b'{"ts": 1763791200000, "machine": "m", "value": 1}', "missing field 'metric'"),
    (b'{"ts": 1763791200000, "machine": "m", "metric": "x"}', "missing field 'value'"),
    (b'{"ts": "yesterday", "machine": "m", "metric": "x", "value": 1}', "field 'ts' must be epoch milliseconds"),
    (b'{"ts": 1.5e12, "machine": "m", "metric": "x", "value": 1}', "field 'ts' must be epoch milliseconds"),
    (b'{"ts": 17637912, "machine": "m", "metric": "x", "value": 1}', "field 'ts' out of range"),
    (b'{"ts": 1763791200000, "machine": 7, "metric": "x", "value": 1}', "field 'machine' must be a non-empty string"),
    (b'{"ts": 1763791200000, "machine": "", "metric": "x", "value": 1}', "field 'machine' must be a non-empty string"),
    (b'{"ts": 1763791200000, "machine": "m", "metric": "x", "value": [1]}', "field 'value' must be a number"),
    (b'{"ts": 1763791200000, "machine": "m", "metric": "x", "value": null}', "field 'value' must be a number"),
    (b'{"ts": 1763791200000, "machine": "m", "metric": "x", "value": 1, "quality": "meh"}',
     "field 'quality' must be one of good|uncertain|bad"),
    (b'{"ts": 1763791200000, "machine": "m", "metric": "x", "value": 1, "line": 3}', "field 'line' must be a string"),
    (b'{"ts": 1763791200000, "machine": "m", "metric": "x", "value": NaN}', "not JSON"),
])
def test_malformed_input_is_a_dead_letter_with_a_reason(raw: bytes, reason: str) -> None:
    result = decode(raw, "kafka:t/0@1", 123)
    assert isinstance(result, DeadLetter)
    assert result.reason.startswith(reason), result.reason
    assert (result.raw, result.source, result.ts) == (raw, "kafka:t/0@1", 123)


def test_oversized_messages_are_dead_lettered_before_parsing() -> None:
    big = orjson.dumps({**GOOD, "unit": "x" * MAX_MESSAGE_BYTES})
    result = decode(big)
    assert isinstance(result, DeadLetter)
    assert result.reason.startswith("oversized")


def test_infinite_value_is_rejected() -> None:
    result = decode(b'{"ts": 1763791200000, "machine": "m", "metric": "x", "value": 1e999}')
    assert isinstance(result, DeadLetter)
    assert "finite" in result.reason or "JSON" in result.reason


@pytest.mark.parametrize(("text", "expected"), [
    ("2025-11-22T06:00:00Z", 1763791200000),
    ("2025-11-22T07:00:00.250+01:00", 1763791200250),
    ("2025-11-22 06:00:00+00:00", 1763791200000),
    ("2025-11-22T06:00:00", None),  # no offset: not RFC 3339
    ("garbage", None),
])
def test_rfc3339_timestamps_convert_at_the_edge(text: str, expected: int | None) -> None:
    assert parse_ts(text) == expected

"""The workload's settings: what users put in the environment, and the one line they get when it is wrong."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from workload.settings import (
    DEFAULT_INCREMENT_MIB,
    DEFAULT_INTERVAL_MS,
    MAX_CEILING_MIB,
    MAX_CEILING_PCT,
    MAX_INCREMENT_MIB,
    Settings,
    SettingsError,
    parse_settings,
)


def test_no_variables_give_the_documented_defaults() -> None:
    settings = parse_settings({})
    assert settings == Settings(increment_mib=10, interval_ms=1000, ceiling_mib=None, allow_unlimited=False)
    assert (DEFAULT_INCREMENT_MIB, DEFAULT_INTERVAL_MS) == (10, 1000)
    assert settings.termination_message_path == "/dev/termination-log"


def test_every_variable_is_read() -> None:
    settings = parse_settings(
        {
            "MEMORY_INCREMENT_MB": "30",
            "INCREMENT_INTERVAL_MS": "0",
            "MEMORY_CEILING_MB": "200",
            "ALLOW_UNLIMITED": "1",
            "TERMINATION_MESSAGE_PATH": "/run/msg",
        }
    )
    assert settings == Settings(30, 0, 200, True, "/run/msg")


def test_empty_values_mean_unset() -> None:
    # Kubernetes can set a variable to "": that is "not configured", not an error.
    empty = {
        "MEMORY_INCREMENT_MB": "",
        "INCREMENT_INTERVAL_MS": " ",
        "MEMORY_CEILING_MB": "",
        "ALLOW_UNLIMITED": "",
    }
    assert parse_settings(empty) == Settings()


def test_a_ceiling_of_0_means_none_as_the_stacks_memory_ceiling_mb_0_does() -> None:
    assert parse_settings({"MEMORY_CEILING_MB": "0"}) == Settings()
    assert parse_settings({"MEMORY_CEILING_MB": str(MAX_CEILING_MIB)}).ceiling_mib == 1024 * 1024  # 1 TiB


def test_a_ceiling_in_percent_is_read_and_0_means_none() -> None:
    assert parse_settings({"MEMORY_CEILING_PCT": "90"}).ceiling_pct == 90
    assert parse_settings({"MEMORY_CEILING_PCT": str(MAX_CEILING_PCT)}).ceiling_pct == 99
    assert parse_settings({"MEMORY_CEILING_PCT": "0"}) == parse_settings({"MEMORY_CEILING_PCT": ""}) == Settings()
    assert Settings() != Settings(ceiling_pct=90)


def test_the_pods_limit_is_read_in_mib_and_unset_is_none() -> None:
    # What the Downward API gives with divisor 1Mi (limitScope=pod): whole MiB.
    assert parse_settings({"POD_MEMORY_LIMIT_MB": "128"}).pod_limit_mib == 128
    assert parse_settings({"POD_MEMORY_LIMIT_MB": ""}).pod_limit_mib is None
    assert parse_settings({}).pod_limit_mib is None


def test_one_ceiling_or_the_other() -> None:
    with pytest.raises(SettingsError) as caught:
        parse_settings({"MEMORY_CEILING_MB": "100", "MEMORY_CEILING_PCT": "90"})
    assert str(caught.value) == (
        "MEMORY_CEILING_PCT='90': must not be set with MEMORY_CEILING_MB: give one ceiling, in MiB or in percent of "
        "the limit"
    )
    # 0 is none: with the other it is no second ceiling
    assert parse_settings({"MEMORY_CEILING_MB": "100", "MEMORY_CEILING_PCT": "0"}).ceiling_mib == 100
    assert parse_settings({"MEMORY_CEILING_MB": "0", "MEMORY_CEILING_PCT": "90"}).ceiling_pct == 90


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("MEMORY_INCREMENT_MB", "0"),
        ("MEMORY_INCREMENT_MB", "-5"),
        ("MEMORY_INCREMENT_MB", "ten"),
        ("MEMORY_INCREMENT_MB", "1.5"),
        ("MEMORY_INCREMENT_MB", "1_000"),
        ("MEMORY_INCREMENT_MB", "+5"),
        ("MEMORY_INCREMENT_MB", "٣"),
        ("MEMORY_INCREMENT_MB", "10Mi"),
        ("MEMORY_INCREMENT_MB", str(MAX_INCREMENT_MIB + 1)),
        ("INCREMENT_INTERVAL_MS", "-1"),
        ("INCREMENT_INTERVAL_MS", "1e3"),
        ("INCREMENT_INTERVAL_MS", "999999999999"),
        ("MEMORY_CEILING_MB", "-1"),
        ("MEMORY_CEILING_MB", str(MAX_CEILING_MIB + 1)),
        ("MEMORY_CEILING_MB", "lots"),
        ("MEMORY_CEILING_PCT", "100"),
        ("MEMORY_CEILING_PCT", "-1"),
        ("MEMORY_CEILING_PCT", "90%"),
        ("MEMORY_CEILING_PCT", "0.9"),
        ("POD_MEMORY_LIMIT_MB", "0"),
        ("POD_MEMORY_LIMIT_MB", "128Mi"),
        ("POD_MEMORY_LIMIT_MB", str(MAX_CEILING_MIB + 1)),
        ("ALLOW_UNLIMITED", "yes"),
        ("ALLOW_UNLIMITED", "true"),
    ],
)
def test_a_bad_value_is_refused_naming_the_variable_and_the_value(variable: str, value: str) -> None:
    with pytest.raises(SettingsError) as caught:
        parse_settings({variable: value})
    assert caught.value.variable == variable
    assert caught.value.value == value
    assert variable in str(caught.value)
    assert repr(value) in str(caught.value)


@given(st.integers(min_value=1, max_value=MAX_INCREMENT_MIB), st.integers(min_value=0, max_value=86_400_000))
def test_any_whole_number_in_range_round_trips(increment: int, interval: int) -> None:
    settings = parse_settings({"MEMORY_INCREMENT_MB": str(increment), "INCREMENT_INTERVAL_MS": f" {interval} "})
    assert (settings.increment_mib, settings.interval_ms) == (increment, interval)


@given(st.text(max_size=12))
def test_any_text_is_either_a_valid_increment_or_a_settings_error(text: str) -> None:
    # The parser never lets an exception other than SettingsError out, and never accepts a value that is not
    # plain ASCII digits for a positive number.
    stripped = text.strip()
    plain_number = stripped.isascii() and stripped.isdigit() and 1 <= int(stripped) <= MAX_INCREMENT_MIB
    if stripped and not plain_number:
        with pytest.raises(SettingsError, match="MEMORY_INCREMENT_MB"):
            parse_settings({"MEMORY_INCREMENT_MB": text})
        return
    settings = parse_settings({"MEMORY_INCREMENT_MB": text})
    assert settings.increment_mib == (int(stripped) if stripped else DEFAULT_INCREMENT_MIB)

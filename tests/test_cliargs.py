"""Command-line values: durations, modes, ``-o`` options and mount.fuse's calling convention."""

from __future__ import annotations

import argparse

import pytest
from hypothesis import given
from hypothesis import strategies as st

from containerfs.cli_options import mount_long_options
from containerfs.cliargs import (
    OptionError,
    expand_options,
    expiry_minutes,
    file_mode,
    from_mount_helper,
    parse_duration,
)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("10", 10), ("10s", 10), ("5m", 300), ("1h", 3600), ("1.5m", 90), ("250ms", 0.25)],
)
def test_durations_take_units_and_plain_numbers_are_seconds(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@given(st.integers(min_value=0, max_value=10**6), st.sampled_from(["s", "m", "h", "d"]))
def test_a_duration_is_its_number_times_its_unit(n: int, unit: str) -> None:
    factor = {"s": 1, "m": 60, "h": 3600, "d": 86400}[unit]
    assert parse_duration(f"{n}{unit}") == n * factor


@pytest.mark.parametrize("text", ["", "5x", "-1s", "1 fortnight", "s"])
def test_what_is_not_a_duration_is_refused(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        parse_duration(text)


def test_container_expiry_plain_numbers_are_minutes_and_units_convert() -> None:
    assert (expiry_minutes("20"), expiry_minutes("2h"), expiry_minutes("90m")) == (20, 120, 90)
    with pytest.raises(argparse.ArgumentTypeError):
        expiry_minutes("30s")


def test_modes_are_octal() -> None:
    assert file_mode("0644") == file_mode("644") == file_mode("0o644") == 0o644
    for bad in ("rw-r--r--", "99999", "8"):
        with pytest.raises(argparse.ArgumentTypeError):
            file_mode(bad)


def test_dash_o_long_options_become_flags_and_the_rest_stays_for_fuse() -> None:
    argv = expand_options(
        ["mnt", "-o", "cache_dir=/c,read_only,allow_other,max_read=4096", "-oro", "--debug"],
        mount_long_options(),
    )
    assert argv == [
        "mnt",
        "--cache-dir=/c",
        "--read-only",
        "--allow-other",
        "--read-only",
        "--debug",
        "-o",
        "max_read=4096",
    ]


def test_a_negative_flag_is_given_as_a_bare_dash_o_name() -> None:
    argv = expand_options(["-o", "no_prefetch,read_only"], mount_long_options())
    assert argv == ["--no-prefetch", "--read-only"]


def test_mount_helper_options_are_dropped() -> None:
    opts = "_netdev,nofail,defaults,rw,noauto,x-systemd.automount,comment=x,uid=5"
    assert expand_options(["-o", opts], mount_long_options()) == ["--uid=5"]


def test_a_backslash_keeps_a_comma_inside_a_value() -> None:
    argv = expand_options(["-o", r"local_only=*.tmp\,*.swp"], mount_long_options())
    assert argv == ["--local-only=*.tmp,*.swp"]


@pytest.mark.parametrize("opts", ["cache_dir", "read_only=yes"])
def test_dash_o_values_must_match_the_option(opts: str) -> None:
    with pytest.raises(OptionError):
        expand_options(["-o", opts], mount_long_options())


def test_mount_fuse_calling_convention_becomes_a_mount_command() -> None:
    assert from_mount_helper(["containerfs", "/mnt/c", "-n", "-o", "ro,base_url=x"]) == [
        "mount",
        "/mnt/c",
        "-o",
        "ro,base_url=x",
    ]
    with pytest.raises(OptionError):
        from_mount_helper(["containerfs"])
    with pytest.raises(OptionError):
        from_mount_helper(["containerfs", "/mnt/c", "extra"])


def test_a_mistyped_command_is_not_taken_for_a_mountpoint(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from containerfs.cli import main

    with pytest.raises(SystemExit) as ended:
        main(["mout", "/nonexistent"])
    assert ended.value.code == 2
    assert "invalid choice: 'mout'" in capsys.readouterr().err

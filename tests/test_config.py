"""Parsing of the size flags (--input_size, --crop_size)."""
import pytest

import config


@pytest.mark.parametrize("text, expected", [
    ("32 32", (32, 32)), ("240 240", (240, 240)), ("96", (96, 96)), ("64,48", (64, 48)), ("64x48", (64, 48)),
    (" 64 , 48 ", (64, 48)), ("64 x 48", (64, 48)),
])
def test_sizes_accepted(text, expected):
    assert config.parse_size(text, "input_size") == expected


@pytest.mark.parametrize("text", ["32 x", "x32", "32x", "32 32 32", "abc", "", "32.5 32", "-32 32", "4 4", "32 0"])
def test_malformed_or_too_small_sizes_are_refused_naming_the_flag(text):
    with pytest.raises(ValueError, match="--input_size="):
        config.parse_size(text, "input_size")

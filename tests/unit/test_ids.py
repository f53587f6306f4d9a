"""Server ids: unguessable, short enough for their columns, and sorted by creation time."""

from __future__ import annotations

import re
import time

from dispatch_engine.models import new_id


def test_ids_fit_the_id_columns_and_carry_their_prefix() -> None:
    for prefix in ("inv", "m", "probe"):
        made = new_id(prefix)
        assert re.fullmatch(rf"{prefix}_[0-9a-hjkmnp-tv-z]{{10}}[0-9a-f]{{16}}", made), made
        assert len(made) <= 32


def test_ids_made_later_sort_after_earlier_ones() -> None:
    made = []
    for _ in range(4):
        made.append(new_id("inv"))
        time.sleep(0.002)
    assert sorted(made) == made


def test_ids_made_in_the_same_millisecond_still_differ() -> None:
    made = {new_id("m") for _ in range(20_000)}
    assert len(made) == 20_000

"""The diff between two policy versions (rules/json_diff.py) and what a version keeps
(schemas/policies.py `version_snapshot`): pure functions."""

from __future__ import annotations

from typing import Any

import pytest

from dispatch_engine.rules.delays import Delay
from dispatch_engine.rules.json_diff import JsonChange, json_diff, pointer_token
from dispatch_engine.schemas.policies import StepState, masked_url, version_snapshot


def _diff(before: Any, after: Any) -> list[tuple[str, Any, Any]]:
    return [(c.path, c.before, c.after) for c in json_diff(before, after)]


def test_equal_documents_have_no_changes() -> None:
    doc = {"a": [1, {"b": None}], "c": {"d": "x"}}
    assert json_diff(doc, {"a": [1, {"b": None}], "c": {"d": "x"}}) == []


def test_a_change_names_the_deepest_path() -> None:
    before = {"business_rules": {"days": {"mon": [{"start": "00:00", "end": "24:00"}]}}}
    after = {"business_rules": {"days": {"mon": [{"start": "08:00", "end": "24:00"}]}}}
    assert json_diff(before, after) == [
        JsonChange("/business_rules/days/mon/0/start", "00:00", "08:00")
    ]


def test_members_added_and_removed_have_none_on_the_other_side() -> None:
    before = {"days": {"mon": [], "sat": ["x"]}}
    after = {"days": {"mon": [], "sun": ["y"]}}
    assert _diff(before, after) == [("/days/sat", ["x"], None), ("/days/sun", None, ["y"])]


def test_null_and_absent_are_the_same() -> None:
    assert json_diff({"a": None}, {}) == []


def test_list_items_compare_by_index_and_extra_items_are_whole() -> None:
    before = {"lineup": [{"delay": "PT0S"}, {"delay": "P2D"}]}
    after = {"lineup": [{"delay": "PT0S"}, {"delay": "P3D"}, {"delay": "P1D"}]}
    assert _diff(before, after) == [
        ("/lineup/1/delay", "P2D", "P3D"),
        ("/lineup/2", None, {"delay": "P1D"}),
    ]
    assert _diff(after, before)[-1] == ("/lineup/2", {"delay": "P1D"}, None)


def test_a_value_whose_type_changed_is_one_change() -> None:
    assert _diff({"a": {"b": 1}}, {"a": [1]}) == [("/a", {"b": 1}, [1])]
    assert _diff({"a": "1"}, {"a": 1}) == [("/a", "1", 1)]


def test_booleans_are_not_numbers() -> None:
    assert _diff({"on": True}, {"on": 1}) == [("/on", True, 1)]
    assert _diff({"n": 0}, {"n": False}) == [("/n", 0, False)]


def test_members_come_in_name_order_whatever_the_input_order() -> None:
    assert [c.path for c in json_diff({"b": 1, "a": 1}, {"a": 2, "b": 2})] == ["/a", "/b"]


@pytest.mark.parametrize(
    ("name", "token"), [("a/b", "a~1b"), ("m~n", "m~0n"), ("~/", "~0~1"), (3, "3")]
)
def test_pointer_tokens_escape_as_rfc_6901_says(name: str | int, token: str) -> None:
    assert pointer_token(name) == token
    assert json_diff({name: 1}, {name: 2})[0].path == f"/{token}"


def test_top_level_scalars() -> None:
    assert _diff(1, 2) == [("", 1, 2)]


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        ("https://dnd.example.com/check", "https://dnd.example.com/check"),
        ("https://dnd.example.com/c?token=s3cr3t", "https://dnd.example.com/c?token=***"),
        ("https://dnd.example.com/c?a=1&b=&flag", "https://dnd.example.com/c?a=***&b=***&flag=***"),
        ("https://h.example:8443/p?x=y=z", "https://h.example:8443/p?x=***"),
    ],
)
def test_masked_urls_keep_query_names_only(url: str, masked: str) -> None:
    assert masked_url(url) == masked


def test_a_snapshot_keeps_settings_fills_defaults_and_masks_dnd() -> None:
    snapshot = version_snapshot(
        name="NPS",
        sandbox=False,
        status="paused",
        deleted=False,
        uuid_field="mobile",
        fatigue={"pending_token": {"enabled": False}},
        business_rules={"time_zone": "Europe/Berlin", "days": {}},
        dnd_webhooks={"email": None, "sms": "https://dnd.example.com/s?k=v"},
        lineup=[
            StepState("msg_1", 1, "email", Delay()),
            StepState("msg_2", 2, "sms", Delay(1, 7200)),
        ],
    )
    assert snapshot["fatigue"]["uuid_field"] == "mobile"
    assert snapshot["fatigue"]["pending_token"] == {"enabled": False}
    assert snapshot["fatigue"]["max_invites"]["enabled"] is False  # a default, filled
    assert snapshot["business_rules"]["min_validity_left"] == "PT1H"
    assert "closed_dates" not in snapshot["business_rules"]  # null: left out, as the API does
    assert snapshot["dnd_webhooks"] == {"sms": "https://dnd.example.com/s?k=***"}
    assert snapshot["lineup"] == [
        {"id": "msg_1", "position": 1, "channel": "email", "delay": "PT0S"},
        {"id": "msg_2", "position": 2, "channel": "sms", "delay": "P1DT2H"},
    ]
    assert (snapshot["name"], snapshot["status"], snapshot["deleted"]) == ("NPS", "paused", False)


def test_a_stored_section_that_no_longer_validates_is_kept_as_stored() -> None:
    snapshot = version_snapshot(
        name="Old",
        sandbox=False,
        status="active",
        deleted=True,
        uuid_field="email",
        fatigue={},
        business_rules={"time_zone": "Nowhere/Land", "legacy": None},
        dnd_webhooks={},
        lineup=[],
    )
    assert snapshot["business_rules"] == {"time_zone": "Nowhere/Land"}
    assert snapshot["dnd_webhooks"] == {} and snapshot["lineup"] == []

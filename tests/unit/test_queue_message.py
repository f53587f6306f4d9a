"""The vendor-facing queue message: pydantic models and the hand-written JSON Schema agree."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator
from pydantic import ValidationError

from dispatch_engine.schemas.queue_message import (
    JSON_SCHEMA_FILE,
    PROBE_NOTE,
    SCHEMA_NAME,
    InvitationMessageV1,
    ProbeMessageV1,
    build_invitation,
    build_probe,
    encode_invitation,
    encode_message,
    format_utc,
    load_json_schema,
)

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def validator() -> Draft202012Validator:
    return Draft202012Validator(
        load_json_schema(), format_checker=Draft202012Validator.FORMAT_CHECKER
    )


def invitation(**overrides: Any) -> InvitationMessageV1:
    fields: dict[str, Any] = {
        "message_id": "msg_01HQ:1",
        "invite_id": "inv_01HQ",
        "token": "tok_abcdefghijklmnop",
        "account": "acme",
        "dispatch": "dsp_1",
        "questionnaire": "nps-2026",
        "channel": "email",
        "address": "alice@example.com",
        "message_template": "tpl-welcome",
        "lineup_position": 1,
        "lineup_message_id": "step-1",
        "scheduled_at": T0,
        "sent_at": T0 + timedelta(seconds=3, microseconds=250),
        "attributes": {"first_name": "Alice", "plan": "gold"},
    }
    fields.update(overrides)
    return build_invitation(**fields)


def as_json(message: InvitationMessageV1 | ProbeMessageV1) -> dict[str, Any]:
    loaded: dict[str, Any] = orjson.loads(encode_message(message))
    return loaded


class TestSchemaFile:
    def test_is_a_valid_2020_12_schema(self) -> None:
        schema = load_json_schema()
        assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
        assert (
            schema["$id"]
            == "https://dispatch-engine.dev/schemas/dispatch-engine.invitation.v1.schema.json"
        )
        Draft202012Validator.check_schema(schema)
        meta = Draft202012Validator(Draft202012Validator.META_SCHEMA)
        assert list(meta.iter_errors(schema)) == []

    def test_shipped_next_to_the_module(self) -> None:
        assert JSON_SCHEMA_FILE.name == "dispatch-engine.invitation.v1.schema.json"
        assert JSON_SCHEMA_FILE.is_file()

    def test_every_property_is_described(self) -> None:
        schema = load_json_schema()
        defs = schema["$defs"]
        assert isinstance(defs, dict)
        for kind in ("invitation", "probe"):
            definition = defs[kind]
            assert definition["additionalProperties"] is False
            assert set(definition["required"]) == set(definition["properties"])
            for name, prop in definition["properties"].items():
                described = "description" in prop or (
                    "$ref" in prop and "description" in defs[prop["$ref"].rsplit("/", 1)[1]]
                )
                assert described, f"{kind}.{name} has no description for vendors"

    def test_tells_vendors_to_deduplicate(self) -> None:
        text = JSON_SCHEMA_FILE.read_text(encoding="utf-8")
        assert "de-duplicate on message_id" in text
        assert "at least once" in text

    def test_fields_match_the_models(self) -> None:
        defs: Any = load_json_schema()["$defs"]
        invitation_fields = {
            f.alias or name for name, f in InvitationMessageV1.model_fields.items()
        }
        probe_fields = {f.alias or name for name, f in ProbeMessageV1.model_fields.items()}
        assert invitation_fields == set(defs["invitation"]["properties"])
        assert probe_fields == set(defs["probe"]["properties"])


class TestValidMessages:
    @pytest.mark.parametrize(
        ("channel", "address", "recipient"),
        [
            ("email", "alice@example.com", {"email": "alice@example.com"}),
            ("sms", "+33612345678", {"mobile": "+33612345678"}),
        ],
    )
    def test_invitation_validates(
        self,
        validator: Draft202012Validator,
        channel: str,
        address: str,
        recipient: dict[str, str],
    ) -> None:
        body = as_json(invitation(channel=channel, address=address))
        validator.validate(body)
        assert body["schema"] == SCHEMA_NAME == "dispatch-engine.invitation/v1"
        assert body["type"] == "invitation"
        assert body["recipient"] == recipient
        assert body["scheduled_at"] == "2026-03-02T09:00:00Z"
        assert body["sent_at"] == "2026-03-02T09:00:03.000250Z"
        assert body["resend_of"] is None
        assert body["sandbox"] is False

    def test_probe_validates(self, validator: Draft202012Validator) -> None:
        body = as_json(build_probe(message_id="probe-1", account="acme", sent_at=T0))
        validator.validate(body)
        assert body == {
            "schema": SCHEMA_NAME,
            "type": "probe",
            "message_id": "probe-1",
            "account": "acme",
            "sent_at": "2026-03-02T09:00:00Z",
            "note": PROBE_NOTE,
        }

    def test_resend_and_sandbox(self, validator: Draft202012Validator) -> None:
        body = as_json(invitation(sandbox=True, resend_of="msg_01HQ:1", message_id="msg_01HQ:1:r1"))
        validator.validate(body)
        assert body["sandbox"] is True
        assert body["resend_of"] == "msg_01HQ:1"

    def test_times_are_converted_to_utc(self) -> None:
        paris = timezone(timedelta(hours=1))
        message = invitation(scheduled_at=datetime(2026, 3, 2, 10, 0, tzinfo=paris))
        assert message.scheduled_at == "2026-03-02T09:00:00Z"

    def test_encoding_is_stable(self) -> None:
        one = invitation(attributes={"b": "2", "a": "1"})
        two = invitation(attributes={"a": "1", "b": "2"})
        assert encode_message(one) == encode_message(two)
        assert encode_message(one).startswith(b'{"account":"acme","attributes":{"a":"1","b":"2"}')

    def test_round_trip(self) -> None:
        message = invitation()
        encoded = encode_message(message)
        assert InvitationMessageV1.model_validate_json(encoded) == message
        assert InvitationMessageV1.model_validate(orjson.loads(encoded)) == message

    def test_plus_zero_offset_is_accepted(self, validator: Draft202012Validator) -> None:
        body = as_json(invitation())
        body["scheduled_at"] = "2026-03-02T09:00:00+00:00"
        validator.validate(body)
        InvitationMessageV1.model_validate(body)

    @settings(max_examples=50, deadline=None)
    @given(
        channel=st.sampled_from(["email", "sms"]),
        position=st.integers(min_value=1, max_value=50),
        when=st.datetimes(
            min_value=datetime(2000, 1, 1),
            max_value=datetime(2100, 1, 1),
            timezones=st.sampled_from([UTC, timezone(timedelta(hours=-7, minutes=-30))]),
        ),
        attributes=st.dictionaries(st.text(max_size=10), st.text(max_size=20), max_size=5),
        sandbox=st.booleans(),
    )
    def test_any_built_message_validates(
        self,
        channel: str,
        position: int,
        when: datetime,
        attributes: dict[str, str],
        sandbox: bool,
    ) -> None:
        validator = Draft202012Validator(
            load_json_schema(), format_checker=Draft202012Validator.FORMAT_CHECKER
        )
        address = "bob@example.org" if channel == "email" else "+14155552671"
        message = invitation(
            channel=channel,
            address=address,
            lineup_position=position,
            scheduled_at=when,
            sent_at=when,
            attributes=attributes,
            sandbox=sandbox,
        )
        validator.validate(as_json(message))


def _mutations() -> Iterator[tuple[str, Any]]:
    """(label, mutate(body)) pairs that must make an invitation invalid."""

    def drop(key: str) -> Any:
        return lambda body: body.pop(key)

    def put(key: str, value: Any) -> Any:
        return lambda body: body.__setitem__(key, value)

    for key in (
        "schema",
        "type",
        "message_id",
        "token",
        "recipient",
        "attributes",
        "sandbox",
        "resend_of",
        "sent_at",
    ):
        yield f"missing {key}", drop(key)
    yield "extra field", put("priority", "high")
    yield "wrong schema", put("schema", "dispatch-engine.invitation/v2")
    yield "wrong type", put("type", "reminder")
    yield "unknown channel", put("channel", "fax")
    yield "position zero", put("lineup_position", 0)
    yield "position as text", put("lineup_position", "1")
    yield "naive time", put("scheduled_at", "2026-03-02T09:00:00")
    yield "non-UTC offset", put("scheduled_at", "2026-03-02T10:00:00+01:00")
    yield "impossible date", put("sent_at", "2026-02-30T09:00:00Z")
    yield "numeric attribute", put("attributes", {"visits": 3})
    yield "sandbox as text", put("sandbox", "false")
    yield "recipient of the other channel", put("recipient", {"mobile": "+33612345678"})
    yield "extra recipient field", put("recipient", {"email": "a@example.com", "name": "A"})
    yield "empty message id", put("message_id", "")
    yield "message id with spaces", put("message_id", "a b")


class TestInvalidMessages:
    @pytest.mark.parametrize(
        ("label", "mutate"), [pytest.param(*case, id=case[0]) for case in _mutations()]
    )
    def test_rejected_by_schema_and_model(
        self, validator: Draft202012Validator, label: str, mutate: Any
    ) -> None:
        body = as_json(invitation())
        mutate(body)
        assert list(validator.iter_errors(body)), f"schema accepted: {label}"
        with pytest.raises(ValidationError):
            InvitationMessageV1.model_validate(body)

    def test_probe_with_extra_field(self, validator: Draft202012Validator) -> None:
        body = as_json(build_probe(message_id="p-1", account="acme", sent_at=T0))
        body["recipient"] = {"email": "a@example.com"}
        assert list(validator.iter_errors(body))
        with pytest.raises(ValidationError):
            ProbeMessageV1.model_validate(body)

    def test_probe_with_other_note(self, validator: Draft202012Validator) -> None:
        body = as_json(build_probe(message_id="p-1", account="acme", sent_at=T0))
        body["note"] = "please send"
        assert list(validator.iter_errors(body))

    @pytest.mark.parametrize("field", ["scheduled_at", "sent_at"])
    def test_naive_time_refused_at_build(self, field: str) -> None:
        with pytest.raises(ValueError, match=f"{field} must be timezone-aware"):
            invitation(**{field: datetime(2026, 3, 2, 9, 0)})

    def test_naive_probe_time_refused(self) -> None:
        with pytest.raises(ValueError, match="timezone-aware"):
            build_probe(message_id="p-1", account="acme", sent_at=datetime(2026, 3, 2))

    def test_wrong_address_for_channel_at_build(self) -> None:
        with pytest.raises(ValidationError):
            invitation(channel="sms", address="alice@example.com")
        with pytest.raises(ValueError, match="channel"):
            invitation(channel="fax")

    def test_messages_are_immutable(self) -> None:
        message = invitation()
        with pytest.raises(ValidationError):
            message.token = "other"  # type: ignore[misc]


def test_format_utc() -> None:
    assert format_utc(T0) == "2026-03-02T09:00:00Z"
    assert format_utc(T0.replace(microsecond=5)) == "2026-03-02T09:00:00.000005Z"
    with pytest.raises(ValueError, match="when must be timezone-aware"):
        format_utc(datetime(2026, 1, 1), "when")


_ids = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789_", min_size=1, max_size=20)
_times = st.datetimes(
    min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)
)


class TestFastEncoder:
    """The delivery hot path encodes without pydantic; it must give the same bytes."""

    @settings(max_examples=200, deadline=None)
    @given(
        channel=st.sampled_from(["email", "sms"]),
        message_id=_ids,
        token=_ids,
        position=st.integers(min_value=1, max_value=50),
        scheduled=_times,
        sent=_times,
        attributes=st.dictionaries(_ids, st.text(max_size=30), max_size=4),
        sandbox=st.booleans(),
        resend_of=st.none() | _ids,
    )
    def test_same_bytes_as_the_validated_model(
        self,
        validator: Draft202012Validator,
        channel: str,
        message_id: str,
        token: str,
        position: int,
        scheduled: datetime,
        sent: datetime,
        attributes: dict[str, str],
        sandbox: bool,
        resend_of: str | None,
    ) -> None:
        address = "alice@example.com" if channel == "email" else "+14155550123"
        common: dict[str, Any] = {
            "message_id": message_id,
            "invite_id": "inv_1",
            "token": token,
            "account": "acme",
            "dispatch": "dsp_1",
            "questionnaire": "nps",
            "channel": channel,
            "address": address,
            "message_template": "tpl",
            "lineup_position": position,
            "lineup_message_id": "step-1",
            "attributes": attributes,
            "sandbox": sandbox,
            "resend_of": resend_of,
        }
        slow = encode_message(build_invitation(**common, scheduled_at=scheduled, sent_at=sent))
        fast = encode_invitation(
            **common, scheduled_at=format_utc(scheduled), sent_at=format_utc(sent)
        )
        assert fast == slow
        validator.validate(orjson.loads(fast))

    def test_refuses_an_unknown_channel(self) -> None:
        with pytest.raises(ValueError, match="channel"):
            encode_invitation(
                message_id="m",
                invite_id="i",
                token="t",
                account="a",
                dispatch="d",
                questionnaire="q",
                channel="fax",  # type: ignore[arg-type]
                address="x",
                message_template="tpl",
                lineup_position=1,
                lineup_message_id="s",
                scheduled_at="2026-03-02T09:00:00Z",
                sent_at="2026-03-02T09:00:00Z",
            )

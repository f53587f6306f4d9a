"""One contact row to an accepted contact or a rejection with a value-free reason."""

from __future__ import annotations

from collections.abc import Mapping

import pytest

from dispatch_engine.ingest.csv_stream import ROW_ERROR_KEY
from dispatch_engine.ingest.rows import ContactIn, Rejection, parse_contact

EMAIL = frozenset({"email"})
SMS = frozenset({"sms"})
BOTH = frozenset({"email", "sms"})

GOOD_EMAIL = "Alice@Example.COM"
GOOD_MOBILE = "+33 6 12 34 56 78"


def parse(
    row: Mapping[str, object],
    channels: frozenset[str] = BOTH,
    uuid_field: str = "email",
    default_region: str | None = None,
) -> ContactIn | Rejection:
    return parse_contact(
        7, row, channels=channels, uuid_field=uuid_field, default_region=default_region
    )


def accepted(
    row: Mapping[str, object],
    channels: frozenset[str] = BOTH,
    uuid_field: str = "email",
    default_region: str | None = None,
) -> ContactIn:
    result = parse(row, channels, uuid_field, default_region)
    assert isinstance(result, ContactIn), result
    return result


def rejected(
    row: Mapping[str, object],
    channels: frozenset[str] = BOTH,
    uuid_field: str = "email",
    default_region: str | None = None,
) -> Rejection:
    result = parse(row, channels, uuid_field, default_region)
    assert isinstance(result, Rejection), result
    assert result.row == 7
    for value in _values(row):
        if len(value) > 2:
            assert value not in result.reason, "reasons must not repeat input values"
    return result


def _values(row: Mapping[str, object]) -> list[str]:
    out: list[str] = []
    for key, value in row.items():
        if key == ROW_ERROR_KEY:
            continue
        if isinstance(value, Mapping):
            out.extend(_values(value))
        elif isinstance(value, str | int | float) and not isinstance(value, bool):
            out.append(str(value).strip())
    return out


class TestAccepted:
    def test_full_csv_row(self) -> None:
        contact = accepted(
            {
                "email": GOOD_EMAIL,
                "mobile": GOOD_MOBILE,
                "external_id": "crm-1",
                "time_zone": "Europe/London",
                "First Name": "Alice",
                "plan": "",
            }
        )
        assert contact == ContactIn(
            email="alice@example.com",
            mobile="+33612345678",
            external_id="crm-1",
            time_zone="Europe/London",
            attributes={"First Name": "Alice"},
            uuid_value="alice@example.com",
            time_zone_source="contact",
        )

    def test_empty_known_columns_are_absent(self) -> None:
        contact = accepted({"email": GOOD_EMAIL, "mobile": "", "external_id": " ", "time_zone": ""})
        assert (contact.mobile, contact.external_id, contact.time_zone) == (None, None, None)

    def test_national_mobile_with_default_region(self) -> None:
        contact = accepted(
            {"mobile": "06 12 34 56 78"}, channels=SMS, uuid_field="mobile", default_region="FR"
        )
        assert contact.mobile == contact.uuid_value == "+33612345678"

    def test_only_email_in_a_two_channel_lineup(self) -> None:
        assert accepted({"email": GOOD_EMAIL}).mobile is None

    def test_only_mobile_in_a_two_channel_lineup(self) -> None:
        assert accepted({"mobile": GOOD_MOBILE}, uuid_field="mobile").email is None

    def test_email_kept_in_an_sms_lineup(self) -> None:
        contact = accepted({"email": GOOD_EMAIL, "mobile": GOOD_MOBILE}, channels=SMS)
        assert contact.email == "alice@example.com"

    def test_json_values_and_nested_attributes(self) -> None:
        contact = accepted(
            {
                "email": GOOD_EMAIL,
                "external_id": 42,
                "score": 9.5,
                "attributes": {"member_id": " M-1 ", "visits": 3, "empty": "", "none": None},
            },
            uuid_field="member_id",
        )
        assert contact.external_id == "42"
        assert contact.attributes == {"score": "9.5", "member_id": "M-1", "visits": "3"}
        assert contact.uuid_value == "m-1"

    def test_csv_column_named_attributes_is_a_plain_attribute(self) -> None:
        contact = accepted({"email": GOOD_EMAIL, "attributes": "vip"})
        assert contact.attributes == {"attributes": "vip"}

    def test_uuid_from_attribute_is_normalised(self) -> None:
        contact = accepted(
            {"email": GOOD_EMAIL, "Member_ID": "  ＡＢＣ-Ⅻ  "}, uuid_field="Member_ID"
        )
        assert contact.uuid_value == "abc-xii"
        assert contact.attributes == {"Member_ID": "ＡＢＣ-Ⅻ"}

    def test_uuid_from_external_id(self) -> None:
        contact = accepted({"email": GOOD_EMAIL, "external_id": "CRM-9"}, uuid_field="external_id")
        assert contact.uuid_value == "crm-9"

    def test_key_case_of_known_columns_from_json(self) -> None:
        contact = accepted({" Email ": GOOD_EMAIL})
        assert contact.email == "alice@example.com"

    def test_limits_at_the_edge(self) -> None:
        row: dict[str, object] = {"email": GOOD_EMAIL, "external_id": "x" * 200}
        row.update({f"{'k' * 97}{i:03d}": "v" * 2000 for i in range(100)})
        assert len(accepted(row).attributes) == 100


class TestRejected:
    @pytest.mark.parametrize(
        ("channels", "row", "field", "reason"),
        [
            (
                EMAIL,
                {"mobile": GOOD_MOBILE},
                "email",
                "missing email for the email messages of the lineup",
            ),
            (
                SMS,
                {"email": GOOD_EMAIL},
                "mobile",
                "missing mobile for the sms messages of the lineup",
            ),
            (
                BOTH,
                {"plan": "gold"},
                "email/mobile",
                "missing both email and mobile for the lineup's messages",
            ),
            (
                BOTH,
                {"email": "", "mobile": "  "},
                "email/mobile",
                "missing both email and mobile for the lineup's messages",
            ),
        ],
    )
    def test_no_address_for_the_lineup(
        self, channels: frozenset[str], row: dict[str, object], field: str, reason: str
    ) -> None:
        result = rejected(row, channels=channels, uuid_field="plan")
        assert (result.field, result.reason) == (field, reason)

    @pytest.mark.parametrize("bad", ["alice@", "not an email", "a@b", "Alice <a@example.com>"])
    def test_malformed_email_even_with_a_good_mobile(self, bad: str) -> None:
        result = rejected({"email": bad, "mobile": GOOD_MOBILE}, uuid_field="mobile")
        assert (result.field, result.reason) == ("email", "malformed email address")

    @pytest.mark.parametrize(
        ("bad", "reason"),
        [
            ("+44 123", "phone number is not valid E.164"),
            ("+1 555 0100 999999", "phone number is not valid E.164"),
            ("06 12 34 56 78", "phone number needs a country code"),
            ("call me", "phone number needs a country code"),
        ],
    )
    def test_malformed_mobile_even_with_a_good_email(self, bad: str, reason: str) -> None:
        result = rejected({"email": GOOD_EMAIL, "mobile": bad}, channels=EMAIL)
        assert (result.field, result.reason) == ("mobile", reason)

    def test_mobile_number_from_json_without_country(self) -> None:
        result = rejected({"email": GOOD_EMAIL, "mobile": 612345678})
        assert result.field == "mobile"

    @pytest.mark.parametrize(
        "zone", ["Mars/Olympus", "localtime", "../etc/passwd", "UTC+1", "x" * 300]
    )
    def test_unknown_time_zone(self, zone: str) -> None:
        result = rejected({"email": GOOD_EMAIL, "time_zone": zone})
        assert (result.field, result.reason) == ("time_zone", "unknown time zone")

    def test_missing_uuid_attribute(self) -> None:
        result = rejected({"email": GOOD_EMAIL, "member_id": ""}, uuid_field="member_id")
        assert (result.field, result.reason) == ("member_id", "missing the UUID field 'member_id'")

    def test_uuid_attribute_name_is_exact(self) -> None:
        result = rejected({"email": GOOD_EMAIL, "Member_ID": "m-1"}, uuid_field="member_id")
        assert result.field == "member_id"

    def test_missing_uuid_mobile(self) -> None:
        result = rejected({"email": GOOD_EMAIL}, uuid_field="mobile")
        assert (result.field, result.reason) == ("mobile", "missing the UUID field 'mobile'")

    def test_missing_uuid_email(self) -> None:
        result = rejected({"mobile": GOOD_MOBILE}, uuid_field="email")
        assert (result.field, result.reason) == ("email", "missing the UUID field 'email'")

    def test_csv_row_error(self) -> None:
        result = rejected(
            {"email": GOOD_EMAIL, ROW_ERROR_KEY: "row has 4 cells but the header has 3"}
        )
        assert (result.field, result.reason) == ("row", "row has 4 cells but the header has 3")

    @pytest.mark.parametrize("value", [{"a": "b"}, ["x"], True, float("nan"), None.__class__])
    def test_attribute_values_must_be_scalars(self, value: object) -> None:
        result = rejected({"email": GOOD_EMAIL, "plan": value})
        assert (result.field, result.reason) == (
            "plan",
            "attribute values must be strings or numbers",
        )

    def test_nested_attribute_values_must_be_scalars(self) -> None:
        result = rejected({"email": GOOD_EMAIL, "attributes": {"tags": ["a", "b"]}})
        assert (result.field, result.reason) == (
            "tags",
            "attribute values must be strings or numbers",
        )

    def test_non_object_nested_attributes(self) -> None:
        result = rejected({"email": GOOD_EMAIL, "attributes": ["a"]})
        assert result.reason == "attribute values must be strings or numbers"

    @pytest.mark.parametrize("value", [{"x": "y"}, ["a@example.com"], False])
    def test_known_columns_must_be_scalars(self, value: object) -> None:
        result = rejected({"email": value, "mobile": GOOD_MOBILE})
        assert (result.field, result.reason) == ("email", "value must be a string")

    def test_attribute_given_twice(self) -> None:
        result = rejected({"email": GOOD_EMAIL, "plan": "a", "attributes": {"plan": "b"}})
        assert (result.field, result.reason) == ("plan", "the attribute is given more than once")

    def test_known_column_given_twice(self) -> None:
        result = rejected({"email": GOOD_EMAIL, "EMAIL": "bob@example.com"})
        assert (result.field, result.reason) == ("email", "the column is given more than once")

    def test_external_id_too_long(self) -> None:
        result = rejected({"email": GOOD_EMAIL, "external_id": "x" * 201})
        assert (result.field, result.reason) == (
            "external_id",
            "external id is longer than 200 characters",
        )

    def test_attribute_key_too_long(self) -> None:
        result = rejected({"email": GOOD_EMAIL, "k" * 101: "v"})
        assert (result.field, result.reason) == (
            "attributes",
            "attribute names are at most 100 characters",
        )

    def test_empty_attribute_key(self) -> None:
        result = rejected({"email": GOOD_EMAIL, "attributes": {" ": "v"}})
        assert (result.field, result.reason) == ("attributes", "attribute names must not be empty")

    def test_too_many_attributes(self) -> None:
        row: dict[str, object] = {"email": GOOD_EMAIL}
        row.update({f"a{i}": "v" for i in range(101)})
        result = rejected(row)
        assert (result.field, result.reason) == (
            "attributes",
            "a contact has at most 100 attributes",
        )

    def test_attribute_value_too_long(self) -> None:
        result = rejected({"email": GOOD_EMAIL, "note": "secret " * 300})
        assert (result.field, result.reason) == (
            "note",
            "attribute values are at most 2000 characters",
        )


class TestNoValueInReasons:
    @pytest.mark.parametrize(
        "row",
        [
            {"email": "secret-person@"},
            {"email": "ok@example.com", "mobile": "+99 secret 1234"},
            {"email": "ok@example.com", "time_zone": "Secret/Zone"},
            {"email": "ok@example.com", "external_id": "secret" * 50},
            {"email": "ok@example.com", "member": {"secret": "nested"}},
            {"email": "ok@example.com", "note": "secret" * 400},
        ],
    )
    def test_reason_and_field_do_not_echo_values(self, row: dict[str, object]) -> None:
        result = rejected(row)
        assert "secret" not in result.reason
        assert "secret" not in result.field


def test_channels_must_be_known() -> None:
    with pytest.raises(ValueError, match="channels"):
        parse({"email": GOOD_EMAIL}, channels=frozenset({"fax"}))
    with pytest.raises(ValueError, match="channels"):
        parse({"email": GOOD_EMAIL}, channels=frozenset())


@pytest.mark.parametrize(
    ("row", "field", "reason"),
    [
        ({"email": "a\x00@example.com"}, "email", "NUL"),
        ({"email": GOOD_EMAIL, "External_ID": "c-\x001"}, "external_id", "NUL"),
        ({"email": GOOD_EMAIL, "first_name": "An\ud800"}, "first_name", "lone surrogates"),
        ({"email": GOOD_EMAIL, "attributes": {"plan": "\x00"}}, "plan", "NUL"),
        ({"email": GOOD_EMAIL, "attributes": {"p\x00": "x"}}, "attributes", "NUL"),
        ({"email": GOOD_EMAIL, "pl\udc00n": "x"}, "attributes", "lone surrogates"),
    ],
)
def test_nul_or_lone_surrogate_anywhere_rejects_the_row(
    row: Mapping[str, object], field: str, reason: str
) -> None:
    """Such text can be neither stored (PostgreSQL) nor encoded: the row, not the file."""
    rejection = rejected(row)
    assert (rejection.field, reason in rejection.reason) == (field, True), rejection

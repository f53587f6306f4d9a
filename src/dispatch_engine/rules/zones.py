"""Whose time zone a message's business window is read in (R-POL-4, issue 22 item 5).

With the policy's `use_contact_time_zone`, the contact's own zone: the `time_zone` the
contact file gives, else the one zone of the mobile number's country (when phonenumbers
names exactly one), else the policy's zone. Without it, always the policy's.

The contact's side is resolved once, at ingest (`contact_zone`), and stored on the invite
with its source, so the lookup can show it and deciding a message parses no phone number;
the policy's side is applied when the zone is used (`window_zone`), so turning
`use_contact_time_zone` on or off takes effect at once for invites already stored.
"""

from __future__ import annotations

from typing import Literal

__all__ = ["ContactZoneSource", "ZoneSource", "contact_zone", "window_zone"]

ContactZoneSource = Literal["contact", "phone_country"]
ZoneSource = Literal["contact", "phone_country", "policy"]


def contact_zone(
    given: str | None, phone_zone: str | None
) -> tuple[str | None, ContactZoneSource | None]:
    """At ingest: the contact file's `time_zone` wins; else the zone of the mobile's country
    (`phone_zone`, already None unless phonenumbers gives exactly one); else none."""
    if given is not None:
        return given, "contact"
    if phone_zone is not None:
        return phone_zone, "phone_country"
    return None, None


def window_zone(
    policy_zone: str,
    use_contact_time_zone: bool,
    invite_zone: str | None,
    invite_source: str | None,
) -> tuple[str, ZoneSource]:
    """The zone a message's window is read in, and where it came from.

    `invite_zone`/`invite_source` are what ingest stored; invites stored before sources were
    (migration 0014) have a zone only when the contact file gave one, hence `contact`."""
    if use_contact_time_zone and invite_zone is not None:
        return invite_zone, "phone_country" if invite_source == "phone_country" else "contact"
    return policy_zone, "policy"

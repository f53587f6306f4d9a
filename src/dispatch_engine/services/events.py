"""Events from EM (R-INV-3): responses and unsubscribes; operator re-subscribes."""

from __future__ import annotations

from datetime import datetime

from dispatch_engine.context import AppContext
from dispatch_engine.db.session import AsyncSession
from dispatch_engine.errors import NotFound, ValidationFailed
from dispatch_engine.models import Invite
from dispatch_engine.security.hashing import all_keyed_hashes
from dispatch_engine.security.normalize import InvalidAddress, normalize_email, normalize_phone
from dispatch_engine.security.sealing import open_contact
from dispatch_engine.store.invites import invite_of_token, suppress_pending_messages
from dispatch_engine.store.unsubscribes import add_unsubscribes, blocked_among, remove_unsubscribes


def normalized_address(channel: str, address: str) -> str:
    try:
        return normalize_email(address) if channel == "email" else normalize_phone(address)
    except InvalidAddress as exc:
        raise ValidationFailed("address", exc.reason) from None


async def invite_by_token(session: AsyncSession, account_id: str, token: str) -> Invite:
    invite = await invite_of_token(session, account_id, token)
    if invite is None:
        raise NotFound("invite with this token")
    return invite


async def record_response(
    session: AsyncSession, account_id: str, token: str, now: datetime
) -> tuple[Invite, int, bool]:
    """The person answered: no further message of that invite. Returns (invite, messages
    stopped, first time?). Replaying the event changes nothing."""
    invite = await invite_by_token(session, account_id, token)
    if invite.responded_at is not None:
        return invite, 0, False
    invite.responded_at = now
    invite.state = "ended"
    invite.end_reason = "responded"
    invite.ended_at = now
    invite.fatigue_lock = None  # answered: rule 1 no longer holds for this person
    stopped = await suppress_pending_messages(session, invite.id, now)
    return invite, stopped, True


def invite_address_hashes(context: AppContext, invite: Invite, channel: str) -> list[str]:
    """The hashes that block the invite's address on `channel` (empty: it has none).

    While the contact data is kept, every key version's hash of the address (lookups match
    during a key rotation); once it was erased, the hash stored with the invite — an
    unsubscribe needs no plaintext (R-INV-3), and people click "unsubscribe" after the last
    message went out, which is when the contact data is erased.
    """
    stored = invite.email_hash if channel == "email" else invite.mobile_hash
    if stored is None:
        return []
    if invite.contact is None:
        return [stored]
    address = open_contact(context.cipher, invite.id, invite.contact).get(
        "email" if channel == "email" else "mobile"
    )
    if not address:
        return [stored]
    return sorted({stored, *address_hashes(context, channel, address)})


def address_hashes(context: AppContext, channel: str, address: str) -> list[str]:
    """Every key version's hash of the normalised address, so lookups keep matching during
    a key rotation (422 on `address` when it is not a valid email or phone number)."""
    return all_keyed_hashes(context.hasher, normalized_address(channel, address))


async def block_hashes(
    session: AsyncSession,
    account_id: str,
    channel: str,
    hashes: list[str],
    now: datetime,
    source: str,
) -> bool:
    """Record unsubscribes for these address hashes; True when none was recorded before."""
    existing = await blocked_among(session, account_id, channel, hashes)
    await add_unsubscribes(
        session, account_id, channel, [h for h in hashes if h not in existing], now, source
    )
    return not existing


async def resubscribe(
    context: AppContext, session: AsyncSession, account_id: str, channel: str, address: str
) -> bool:
    hashes = address_hashes(context, channel, address)
    return bool(await remove_unsubscribes(session, account_id, channel, hashes))

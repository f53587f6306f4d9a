"""What binds each encrypted column's tokens to their row, and the contact seal.

Every FieldCipher token is sealed with associated data naming its row, so a value copied
to another row fails to open. The builders live here, below every writer and reader, so
ingest, delivery, events and key rotation (``ENCRYPTED_COLUMNS``) all import the same
function instead of reaching into each other's packages.
"""

from __future__ import annotations

from typing import Any

from dispatch_engine.security.crypto import FieldCipher

__all__ = [
    "communication_recipient_aad",
    "contact_aad",
    "integration_secret_aad",
    "open_contact",
    "seal_contact",
    "webhook_url_aad",
]


def contact_aad(invite_id: str) -> bytes:
    """An invite's contact details (one ciphertext per invite)."""
    return f"invite-contact:{invite_id}".encode()


def integration_secret_aad(account_id: str) -> bytes:
    """An account's queue-integration secrets."""
    return f"queue-integration:{account_id}".encode()


def webhook_url_aad(webhook_id: str) -> bytes:
    """A notification webhook's URL (the path may hold a token)."""
    return webhook_id.encode()


def communication_recipient_aad(communication_id: str) -> bytes:
    """The recipient of a logged incident communication."""
    return f"incident-communication:{communication_id}".encode()


def seal_contact(
    cipher: FieldCipher,
    invite_id: str,
    *,
    email: str | None,
    mobile: str | None,
    attributes: dict[str, str],
) -> str:
    payload: dict[str, Any] = {"email": email, "mobile": mobile, "attributes": attributes}
    return cipher.encrypt_json(payload, aad=contact_aad(invite_id))


def open_contact(cipher: FieldCipher, invite_id: str, sealed: str) -> dict[str, Any]:
    return cipher.decrypt_json(sealed, aad=contact_aad(invite_id))

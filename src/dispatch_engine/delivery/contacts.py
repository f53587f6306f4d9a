"""Contact details at rest: one AES-GCM ciphertext per invite, bound to the invite id."""

from __future__ import annotations

from typing import Any

from dispatch_engine.security.crypto import FieldCipher


def contact_aad(invite_id: str) -> bytes:
    return f"invite-contact:{invite_id}".encode()


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

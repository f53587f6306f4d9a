"""Key rotation: move stored values to the current key of each ring.

Two rings rotate (see ``docs/operations.md``, "Key rotation"):

* the **encryption** ring (``DISPATCH_ENCRYPTION_KEYS``): every column in
  :data:`ENCRYPTED_COLUMNS` whose token (``"<key id>:<b64>"``) was sealed by another key is
  decrypted and sealed again under the current key, with the same associated data its writer
  used;
* the **HMAC** ring (``DISPATCH_HMAC_KEYS``): invites that still hold their contact data get
  ``uuid_hash``, ``email_hash`` and ``mobile_hash`` recomputed under the current key from the
  decrypted values (the ingest's own parsing and :func:`keyed_hash`; every recomputed value
  is first checked against the stored hash under its old key). Each ``old hash -> new hash``
  pair learned that way also relabels the person's fatigue ledger rows, the invite's
  pending-token lock, and copies the unsubscribes recorded under the old hash (the old rows
  stay).

:func:`rotate_keys` does both, in batches of its own short transactions: rows are selected by
key id (keyset pagination on the primary key) and written with one conditional statement per
batch (``WHERE value = old value``), so a writer that changes a row meanwhile wins and the
row is simply picked up by the next run. Running it again changes nothing.

What cannot be recomputed (hashes of invites whose contact data was erased, unsubscribes of
people with no live invite) is carried forward at ingest time by
``ingest.carry_forward`` (``carry_forward_unsubscribes``, ``carry_forward_fatigue``), when
that person comes back.
"""

from dispatch_engine.services.key_rotation.common import (
    ENCRYPTED_COLUMNS,
    ColumnResult,
    EncryptedColumn,
    RotationReport,
)
from dispatch_engine.services.key_rotation.rotation import rotate_keys

__all__ = [
    "ENCRYPTED_COLUMNS",
    "ColumnResult",
    "EncryptedColumn",
    "RotationReport",
    "rotate_keys",
]

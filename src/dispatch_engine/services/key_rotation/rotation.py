"""Both rings, in order, as `dispatch-engine keys reencrypt` runs them."""

from __future__ import annotations

import structlog

from dispatch_engine.db.engine import session_factory
from dispatch_engine.db.session import AsyncEngine
from dispatch_engine.security.crypto import FieldCipher
from dispatch_engine.security.hashing import KeyedHasher
from dispatch_engine.services.key_rotation.common import (
    ENCRYPTED_COLUMNS,
    ColumnResult,
    RotationReport,
)
from dispatch_engine.services.key_rotation.reencrypt import reencrypt_column
from dispatch_engine.services.key_rotation.rehash import (
    hmac_remaining,
    rehash_invites,
    repair_ledger,
    repair_locks,
)

log = structlog.get_logger(__name__)

# --- the whole rotation -------------------------------------------------------------------


async def rotate_keys(
    engine: AsyncEngine,
    cipher: FieldCipher,
    hasher: KeyedHasher,
    *,
    batch_size: int = 1000,
    dry_run: bool = False,
) -> RotationReport:
    """Re-encrypt every encrypted column and rehash what can be rehashed, batch by batch.

    Each batch is its own short transaction; a run can be interrupted and started again.
    With ``dry_run`` nothing is written: ``changed`` counts what would change.
    """
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    sessions = session_factory(engine)
    report = RotationReport(dry_run, cipher.current_key_id, hasher.current_key_id)
    for spec in ENCRYPTED_COLUMNS:
        column_result = await reencrypt_column(sessions, spec, cipher, batch_size, dry_run)
        report.columns.append(column_result)
        log.info("key_rotation_column", column=spec.name, changed=column_result.changed)
    hmac_results = {
        name: ColumnResult(name, "hmac")
        for name in (
            "invites.uuid_hash",
            "invites.email_hash",
            "invites.mobile_hash",
            "invites.fatigue_lock",
            "invites (erased)",
            "fatigue_ledger.uuid_hash",
            "unsubscribes.address_hash",
        )
    }
    await rehash_invites(sessions, cipher, hasher, batch_size, dry_run, hmac_results)
    await repair_locks(sessions, hasher, batch_size, dry_run, hmac_results["invites.fatigue_lock"])
    await repair_ledger(
        sessions, hasher, batch_size, dry_run, hmac_results["fatigue_ledger.uuid_hash"]
    )
    await hmac_remaining(sessions, hasher, hmac_results)
    report.columns.extend(hmac_results.values())
    log.info(
        "key_rotation_done",
        dry_run=dry_run,
        changed=report.changed,
        skipped=report.skipped,
        encryption_remaining=report.encryption_remaining,
    )
    return report

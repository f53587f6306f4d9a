"""Why the engine itself paused a dispatch when its policy changed under it (R-POL-7,
R-POL-8); an operator's pause is "manual" or their reason. The set-based pausing is
`store.dispatches.pause_active_dispatches`."""

from __future__ import annotations

POLICY_DELETED = "policy_deleted"
LINEUP_CHANGED = "lineup_changed"
VALIDITY_TOO_SHORT = "validity_too_short"  # lifted by PATCHing a long enough validity

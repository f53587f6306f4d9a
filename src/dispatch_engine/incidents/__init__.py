"""Incident operations (SPEC §6): incidents and their clocks, status notices, impacted
sendings, approvals and resends, the communications log, post-mortems and notifications."""

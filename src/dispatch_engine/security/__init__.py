"""Security helpers: field encryption and sealing, keyed hashing, normalisation, SSRF rules."""

"""Security helpers: field encryption, keyed hashing, normalisation and SSRF rules."""

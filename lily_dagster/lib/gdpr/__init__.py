"""GDPR erasure (CONTRACT.md §7): `Subject` (what is erased and how), the erasure across
every store of a tenant, and the erased-subjects list that masks later events on ingest."""

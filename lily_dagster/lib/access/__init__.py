"""Reading metadata back (CONTRACT.md §6): who may do what (`decision`), which records a
caller may see (`policy`), what a caller without the PII scope sees of them (`redaction`),
and the reads themselves over a tenant's snapshot (`snapshot`, `queries`, `cursor`)."""

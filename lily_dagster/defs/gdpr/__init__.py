"""GDPR erasure from the Dagster UI: `gdpr_erasure_job` (docs/gdpr.md)."""

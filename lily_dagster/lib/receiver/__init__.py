"""What the HTTP receiver (`lily_dagster.api`) does, free of the HTTP framework: bearer
tokens (auth.py), body checks (body.py), the per-tenant quota (rate_limit.py), the error
type (errors.py), and the vendor webhooks (vendors/, with signing.py and commands.py)."""

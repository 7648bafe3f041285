"""Lily: metadata events into Atlan, on Dagster."""

import warnings

# Dagster warns, in every process that loads Lily's definitions (each run worker), that APIs
# Lily chose knowingly (a partitioned asset check, an asset's backfill policy) are in beta or
# preview, or superseded. Only these classes are silenced; dagster_shared is a light import.
from dagster_shared.utils.warnings import BetaWarning, PreviewWarning, SupersessionWarning

for _category in (BetaWarning, PreviewWarning, SupersessionWarning):
    warnings.filterwarnings("ignore", category=_category)

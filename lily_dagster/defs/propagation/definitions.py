"""Propagation: hub changes delivered to the targets LILY_CONFIG names (none: nothing)."""

import dagster as dg

from lily_dagster.defs.propagation.assets import build_propagation
from lily_dagster.settings import Settings


@dg.definitions
def defs() -> dg.Definitions:
    built = build_propagation(Settings.from_env())
    return dg.Definitions(assets=built["assets"], jobs=built["jobs"], sensors=built["sensors"])

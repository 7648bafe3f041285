"""The code location: every definition under `lily_dagster/defs/`, found by folder
(`load_from_defs_folder`, as in `dg`'s scaffold): each domain folder's modules, and the
`@dg.definitions` of what depends on configuration (propagation, resources). Bad
configuration (LILY_CONFIG's hooks, targets and pollers) fails here, when the code location
loads, with its one-line message, not in the middle of a run."""

from pathlib import Path

import dagster as dg

from lily_dagster.lib.config_checks import check_plugin_config
from lily_dagster.settings import Settings


@dg.definitions
def defs() -> dg.Definitions:
    check_plugin_config(Settings.from_env().config)
    return dg.load_from_defs_folder(path_within_project=Path(__file__).parent)

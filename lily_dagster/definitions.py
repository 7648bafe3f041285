"""The code location: every definition under `lily_dagster/defs/`, found by folder, and
the `@dg.definitions` of what depends on configuration (propagation, resources). Bad
configuration (LILY_CONFIG's hooks, targets and pollers) fails here, when the code location
loads, with its one-line message, not in the middle of a run.

`dg.load_from_defs_folder` finds the same definitions (a test checks it), but it also
imports every installed dg component library (dagster-aws, dagster-k8s) to describe them
to the UI: ~0.5 s more per load, and every run's worker loads the code location. So the
folder is read with Dagster's package loader, and the two lazy definitions are added."""

import dagster as dg

import lily_dagster.defs
from lily_dagster.defs import resources
from lily_dagster.defs.propagation import definitions as propagation
from lily_dagster.lib.config_checks import check_plugin_config
from lily_dagster.lib.logs import configure_logging
from lily_dagster.settings import Settings


@dg.definitions
def defs() -> dg.Definitions:
    settings = Settings.from_env()
    configure_logging(settings.log_format, settings.log_level)
    check_plugin_config(settings.config)
    return dg.Definitions.merge(
        dg.load_definitions_from_package_module(lily_dagster.defs),
        propagation.defs(),
        resources.resources(),
    )

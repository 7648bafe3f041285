"""Every plug-in LILY_CONFIG names, configured once, so bad configuration fails at start
(the `lily` commands, the code location) with its one-line message, not inside a run."""

from __future__ import annotations

from lily_dagster.lib.alerts import check_alerts_config
from lily_dagster.lib.hooks import check_hook_config
from lily_dagster.lib.pollers import check_poller_config
from lily_dagster.lib.propagation import check_target_config
from lily_dagster.settings import LilyConfigFile


def check_plugin_config(config: LilyConfigFile) -> None:
    """Hooks, targets, pollers and the alerts target; ConfigError on the first problem."""
    check_hook_config(config)
    check_target_config(config)
    check_poller_config(config)
    check_alerts_config(config)

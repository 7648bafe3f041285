"""`python -m lily_dagster.cli`: the `lily` command (how `lily dev` starts its children)."""

import sys

from lily_dagster.cli import main

sys.exit(main())

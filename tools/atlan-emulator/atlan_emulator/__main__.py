"""`python -m atlan_emulator`: the same as the `atlan-emulator` command."""

import sys

from atlan_emulator.cli import main

sys.exit(main())

"""The serving process (service.server) with one more kind: what an operator's own launcher looks like.

A kind is code the operator runs, registered by one line before the app is built; monoserve never
loads one from a file or the environment (a hostile publisher could write either). Run with one
worker (MONOSERVE_WORKERS=1): the app is then built in this process, after the registration.
"""

from __future__ import annotations

import sys

from scaler_kind import ScalerKind
from service.compute.kinds import register_kind

register_kind(ScalerKind())  # the one registry line

if __name__ == "__main__":
    from service.server import main
    from service.settings import get_settings

    if get_settings().workers != 1:  # spawned workers would import service.app without this module's line
        sys.exit("kind_launcher: set MONOSERVE_WORKERS=1: worker processes would not register the scaler kind")
    sys.exit(main())

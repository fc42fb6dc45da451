"""OpenMP's wait behaviour, set before torch loads, so that runs side by side share the cores.

The OpenMP runtime in the torch wheels (GNU libgomp) lets a thread that waits at a barrier spin
for a while before it sleeps (GOMP_SPINCOUNT turns, 300,000 by default). Alone on the cores that
is the fastest; with two runs on them, each run's spinning threads burn the time the other's
working threads need: two default runs side by side took 45x longer per epoch than one (2 cores).
A short spin keeps solo speed and lets side-by-side runs share the cores (README, Performance:
`python scripts/bench.py --side-by-side`). libgomp reads the setting once, when torch loads it, so
`cli.main` calls `configure_wait` before anything imports torch. A wait behaviour the user
exported (either variable) is kept. This module must not import torch.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import MutableMapping

log = logging.getLogger(__name__)

SPIN_VARIABLE = "GOMP_SPINCOUNT"
SPIN_COUNT = "1000"  # turns before a waiting thread sleeps: the measured choice (see above)
# The variables with which a user chooses libgomp's wait behaviour; either one means "leave it".
WAIT_VARIABLES = ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY")


def configure_wait(environ: MutableMapping[str, str] = os.environ) -> None:
    """Set the short spin unless the user chose a wait behaviour; warn if torch is already loaded
    (its OpenMP runtime has read the environment, so the setting comes too late to count)."""
    if any(name in environ for name in WAIT_VARIABLES):
        return
    environ[SPIN_VARIABLE] = SPIN_COUNT
    if "torch" in sys.modules:
        log.warning("torch was loaded before %s was set; runs side by side may slow each other down.", SPIN_VARIABLE)


def wait_setting(environ: MutableMapping[str, str] = os.environ) -> str:
    """The wait behaviour in force, as metrics.json records it: `NAME=value, ...`, or `libgomp default`."""
    chosen = [f"{name}={environ[name]}" for name in WAIT_VARIABLES if name in environ]
    return ", ".join(chosen) or "libgomp default"

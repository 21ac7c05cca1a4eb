"""Small helpers shared by the tests (import as ``from helpers import ...``; ROS-free).

* :data:`DOMAIN_ID`: this test process's ROS domain (every DDS test of the process uses it and
  keeps apart from the others by namespace or topic prefix);
* :func:`read_mask_png`: a mask PNG (mono8 or RGB, 0 / 255 or any nonzero) as ``(H, W)`` bool.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image

# Each test process its own domain, from its pid: parallel test runs on this host (several
# worktrees, CI) do not see each other. 1..100; 0 is left to interactive use.
DOMAIN_ID = 1 + os.getpid() % 100


def read_mask_png(path: str | Path, threshold: int = 127) -> np.ndarray:
    """``(H, W)`` bool: pixels above ``threshold`` after conversion to grey (``L``)."""
    with Image.open(path) as img:
        return np.asarray(img.convert("L")) > threshold

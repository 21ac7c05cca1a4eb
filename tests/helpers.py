"""Small helpers shared by the tests (import as ``from helpers import ...``; ROS-free).

* :data:`DOMAIN_ID`: this test process's ROS domain (every DDS test of the process uses it and
  keeps apart from the others by namespace or topic prefix);
* :func:`read_mask_png`: a mask PNG (mono8 or RGB, 0 / 255 or any nonzero) as ``(H, W)`` bool;
* :func:`shell_blocks`, :func:`shell_commands`: the ```bash blocks of a Markdown file and their
  commands (README and docs tests);
* :func:`free_port`: a free local TCP port (a torch.distributed rendezvous per test);
* :func:`load_script`: a script of tools/ or bench/ (not a package) imported as a module.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shlex
import socket
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
from PIL import Image

# Each test process its own domain, from its pid: parallel test runs on this host (several
# worktrees, CI) do not see each other. 1..100; 0 is left to interactive use.
DOMAIN_ID = 1 + os.getpid() % 100


def read_mask_png(path: str | Path, threshold: int = 127) -> np.ndarray:
    """``(H, W)`` bool: pixels above ``threshold`` after conversion to grey (``L``)."""
    with Image.open(path) as img:
        return np.asarray(img.convert("L")) > threshold


def shell_blocks(path: str | Path) -> list[str]:
    """The bodies of the ```bash blocks of a Markdown file, in order."""
    return re.findall(r"```bash\n(.*?)```", Path(path).read_text(), flags=re.S)


def shell_commands(block: str) -> list[list[str]]:
    """Logical commands of a shell block: continuation lines joined, comments and blanks dropped,
    each split into words as the shell would (quotes removed)."""
    joined = re.sub(r"\\\n", " ", block)
    out = []
    for line in joined.splitlines():
        words = shlex.split(line, comments=True)
        if words:
            out.append(words)
    return out


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (the OS's pick for port 0)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def load_script(path: Path, name: str) -> ModuleType:
    """The script at ``path`` imported as module ``name``, its own folder importable while it
    loads (bench scripts import their ``common``)."""
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(path.parent))
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(path.parent))
    return module

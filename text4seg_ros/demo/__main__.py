"""``python -m text4seg_ros.demo``: see :mod:`text4seg_ros.demo.run`."""

import sys

from .run import main

sys.exit(main())

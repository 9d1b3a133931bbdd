"""``python -m pasta_ros.cli ...`` is ``pasta ...``."""

import sys

from pasta_ros.cli import main

sys.exit(main())

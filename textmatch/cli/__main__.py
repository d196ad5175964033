"""python -m textmatch.cli"""

import sys

from . import main

sys.exit(main())

"""`python -m sweep` is `python -m sweep.grid`."""
import sys

from .grid import main

sys.exit(main())

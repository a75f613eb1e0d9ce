"""python -m sweep.report RUN_DIR [RUN_DIR ...] [--out DIR] [--html]  (see cli.py)."""
from .cli import main

raise SystemExit(main())

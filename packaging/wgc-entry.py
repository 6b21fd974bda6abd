"""Entry point of the frozen executable: the same main() as `python -m wgc`."""
import sys

from wgc.__main__ import main

sys.exit(main())

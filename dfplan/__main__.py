import sys

from dfplan.cli import main

sys.exit(main())

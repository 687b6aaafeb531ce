import sys

from LegSegNetLib.cli import main

sys.exit(main())

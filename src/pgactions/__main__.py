import sys

from pgactions.cli import main

sys.exit(main())

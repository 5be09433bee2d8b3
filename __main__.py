"""`python -m livegate ...` runs the command line."""
import sys

from livegate.cli import main

sys.exit(main())

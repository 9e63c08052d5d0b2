"""`python -m captioner` runs the command line."""

from captioner.cli import main

raise SystemExit(main())

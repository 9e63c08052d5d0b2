"""`python -m captioner` runs the command line."""

from captioner.cli.main import main

raise SystemExit(main())

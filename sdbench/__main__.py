"""`python -m sdbench` is the `sdbench` command."""

from sdbench.cli import main

raise SystemExit(main())

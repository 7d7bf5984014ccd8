"""`python -m worker` is the `persistence-worker` command."""

from worker.cli import main

raise SystemExit(main())

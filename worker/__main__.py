"""`python -m worker` is the `persistence-worker` command."""

from worker.commands.cli import main

raise SystemExit(main())

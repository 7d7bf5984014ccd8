"""`make demo KEEP=1` (or `python -m tests.demo --keep`): the servers stay up after the demo, with
the commands to try on its data, until Ctrl-C."""

from __future__ import annotations

import shlex
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

TRUE = frozenset({"1", "true", "yes", "on"})


def keep_requested(argv: Sequence[str], environ: Mapping[str, str]) -> bool:
    """`--keep` on the command line, or KEEP=1 (true, yes, on) in the environment (`make demo KEEP=1`)."""
    return "--keep" in argv or environ.get("KEEP", "").strip().lower() in TRUE


def program() -> str:
    """How to type `persistence-worker` here: the script beside this Python (relative when under the
    current directory), else `python -m worker`."""
    script = Path(sys.executable).parent / "persistence-worker"
    if not script.is_file():
        return f"{shlex.quote(sys.executable)} -m worker"
    try:
        return str(script.relative_to(Path.cwd()))
    except ValueError:
        return str(script)


def try_it(bootstrap: str, mongo_uri: str, *, plan_id: str, program: str) -> list[str]:
    """The servers, then the environment and commands that query the demo's data."""
    commands = (
        "query validations",
        f"query plan-history {plan_id} --limit 5",
        "query incidents --severity critical --limit 5",
        "query workflows --status failed --limit 5",
        "query sla-violations --limit 5",
        "query incident-types",
        "dlq replay --dry-run",
        "indexes check",
    )
    return [
        f"Kafka: {bootstrap}    MongoDB: {mongo_uri}",
        "In another shell, set the two variables, then try the commands:",
        f"  export KAFKA_BOOTSTRAP_SERVERS={shlex.quote(bootstrap)} MONGODB_URI={shlex.quote(mongo_uri)}",
        *(f"  {program} {command}" for command in commands),
    ]


def wait_for_ctrl_c() -> None:
    """Block until Ctrl-C (the caller's `with` blocks then stop the servers)."""
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        print("\nCtrl-C: stopping the servers")

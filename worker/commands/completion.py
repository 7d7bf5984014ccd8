"""`persistence-worker completion bash|zsh`: a completion script generated from the parser by shtab."""

from __future__ import annotations

import argparse

import shtab


def completion_script(parser: argparse.ArgumentParser, shell: str) -> str:
    """The script for `shell`; it completes every command, subcommand, option and choice."""
    script: str = shtab.complete(parser, shell=shell)
    return script

"""The commands read as one tool: grouped names, per-query options with bounds, choices, one exit-code
table, completion, and a quiet end when the reader of stdout goes away."""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from worker.commands import cli
from worker.commands.cli import build_parser
from worker.commands.exits import ExitCode
from worker.commands.indexes import report_lines
from worker.commands.output import reporting
from worker.dead_letters.replay import Summary
from worker.mongo.indexes import CollectionIndexReport, IndexSpec
from worker.mongo.queries import GUIDE_QUERIES

ROOT = Path(__file__).resolve().parents[2]


def parse_error(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    """The parser refuses `argv` with exit 2; its message."""
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args(argv)
    assert exit_info.value.code == ExitCode.CONFIGURATION
    return capsys.readouterr().err


def test_each_query_takes_its_own_options() -> None:
    """plan-history takes the plan as an argument, workflows --status, incidents --severity (any case)."""
    parse = build_parser().parse_args
    assert parse(["query", "plan-history", "plan-7"]).plan_id == "plan-7"
    assert parse(["query", "workflows", "--status", "partial", "--limit", "5"]).status == "PARTIAL"
    assert parse(["query", "incidents", "--severity", "high", "--json"]).severity == "HIGH"
    defaults = parse(["query", "incidents"])
    assert (defaults.severity, defaults.limit, defaults.json) == ("CRITICAL", 20, False)


@pytest.mark.parametrize("name", sorted(GUIDE_QUERIES))
def test_every_guide_query_is_a_subcommand_with_its_parameters(name: str) -> None:
    """Each query of GUIDE_QUERIES parses as `query NAME` with its parameters' defaults and builds its query."""
    guide = GUIDE_QUERIES[name]
    given = {parameter.name: "given" for parameter in guide.parameters if parameter.default is None}
    args = build_parser().parse_args(["query", name, *given.values()])
    defaults = {parameter.name: parameter.default for parameter in guide.parameters if parameter.default is not None}
    assert {key: getattr(args, key) for key in [*given, *defaults]} == {**given, **defaults}
    assert guide.bound(vars(args)).explain_command() == guide.build(**given, **defaults).explain_command()


@pytest.mark.parametrize(
    "argv",
    [["query", "plan-history"], ["query", "workflows", "--limit", "-1"], ["query", "workflows", "--limit", "0"],
     ["query", "incidents", "--limit", "100001"], ["query", "validations", "--limit", "5"],
     ["query", "--plan-id", "p", "plan-history"], ["query", "workflows", "--severity", "HIGH"]],
)  # fmt: skip
def test_query_options_out_of_bounds_or_place_are_refused(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    """A missing plan, a limit below 1 or above the cap, an option of another query: exit 2."""
    assert parse_error(argv, capsys)


def test_a_refused_choice_lists_the_choices(capsys: pytest.CaptureFixture[str]) -> None:
    """An unknown severity, route or error type is refused by the parser with the list of known ones."""
    assert "LOW" in parse_error(["query", "incidents", "--severity", "urgent"], capsys)
    assert "incidents" in parse_error(["dlq", "replay", "--route", "nope"], capsys)
    error = parse_error(["dlq", "replay", "--error-type", "oops"], capsys)
    assert all(kind in error for kind in ("validation", "persist_failed", "persist_refused", "unprocessable"))


def test_telemetry_commands_are_grouped_and_the_old_spellings_still_parse() -> None:
    """`telemetry redeliver|replay` are the names; `redeliver` and `replay` alone parse to the same handler."""
    parse = build_parser().parse_args
    for new, old in ((["telemetry", "replay", "--dry-run"], ["replay", "--dry-run"]),
                     (["telemetry", "redeliver", "--once"], ["redeliver", "--once"])):  # fmt: skip
        assert parse(new).handler is parse(old).handler
        assert getattr(parse(new), "renamed_to", None) is None
    assert parse(["replay"]).renamed_to == "telemetry replay"


def test_top_level_help_lists_the_grouped_names_and_hides_the_old_ones(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`--help` lists telemetry and dlq, not the former spellings, and ends with the exit-code table."""
    assert cli.main(["--help"]) == ExitCode.OK
    text = capsys.readouterr().out
    listed = set(re.findall(r"^    (\w[\w-]*)\s", text, flags=re.MULTILINE))
    assert {"run", "check", "config", "indexes", "query", "telemetry", "dlq", "completion"} <= listed
    assert not {"redeliver", "replay"} & listed
    assert "exit codes (the same for every command)" in text


@pytest.mark.parametrize(
    "command",
    [["run"], ["check"], ["indexes", "check"], ["indexes", "ensure"], ["query", "workflows"],
     ["telemetry", "replay"], ["telemetry", "redeliver"], ["dlq", "replay"], ["completion"]],
)  # fmt: skip
def test_the_exit_code_table_is_in_the_top_help_only(
    command: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    """A command's --help points to the exit codes of the top --help instead of repeating the table."""
    assert cli.main([*command, "--help"]) == ExitCode.OK
    text = capsys.readouterr().out
    assert not [code for code in ExitCode if re.search(rf"^ +{int(code)}  \w", text, flags=re.MULTILINE)]
    assert text.rstrip().splitlines()[-1].startswith("exit codes:")
    assert "persistence-worker --help" in text.rstrip().splitlines()[-1]


def test_the_top_help_lists_every_exit_code_with_its_meaning(capsys: pytest.CaptureFixture[str]) -> None:
    """`persistence-worker --help` ends with the one exit-code table, every code with its meaning."""
    assert cli.main(["--help"]) == ExitCode.OK
    text = capsys.readouterr().out
    for code in ExitCode:
        assert re.search(rf"^ +{int(code)}  \w", text, flags=re.MULTILINE), code


@pytest.mark.parametrize(
    ("argv", "listed"),
    [(["frob"], {"run", "check", "config", "indexes", "query", "telemetry", "dlq", "completion"}),
     (["telemetry", "frob"], {"redeliver", "replay"}), (["dlq", "frob"], {"replay"})],
)  # fmt: skip
def test_an_unknown_command_is_answered_with_the_listed_commands_only(
    argv: list[str], listed: set[str], capsys: pytest.CaptureFixture[str]
) -> None:
    """An unknown (sub)command names the commands --help lists, never the hidden former spellings."""
    error = parse_error(argv, capsys)
    assert "invalid choice: 'frob'" in error
    assert set(re.findall(r"'([\w-]+)'", error.split("choose from")[1])) == listed


def test_indexes_check_says_what_ensure_would_do() -> None:
    """After `check`, a missing index reads "would create", a TTL to set "would update TTL", others CONFLICT."""
    plain, ttl = IndexSpec(keys=(("type", 1),)), IndexSpec(keys=(("timestamp", 1),), expire_after_seconds=60)
    report = CollectionIndexReport(collection="incidents", missing=[plain],
                                   conflicts=[(ttl, IndexSpec(keys=ttl.keys)),
                                              (plain, IndexSpec(keys=plain.keys, unique=True))])  # fmt: skip
    labels = [label for label, _ in report_lines(report)]
    assert labels == ["would create", "would update TTL", "CONFLICT"]


@pytest.mark.parametrize("shell", ["bash", "zsh"])
def test_completion_scripts_name_every_command(shell: str, capsys: pytest.CaptureFixture[str]) -> None:
    """`completion bash|zsh` prints a script (no settings needed) that knows the commands and subcommands."""
    assert cli.main(["completion", shell]) == ExitCode.OK
    script = capsys.readouterr().out
    assert len(script) > 1000
    for word in ("telemetry", "redeliver", "dlq", "plan-history", "indexes", "--error-type"):
        assert word in script, word


def test_dlq_replay_progress_and_summary_use_the_same_words() -> None:
    """The progress line of dlq replay counts replayed, still_dead and not_chosen, as its summary does."""
    summary = Summary(replayed=3, not_chosen=58)
    out = io.StringIO()
    with reporting("dlq replay", 61, Summary(), stream=out) as reporter:
        reporter.update(summary)
    assert out.getvalue().splitlines()[-1] == "dlq replay: 61/61 (100%) replayed=3 still_dead=0 not_chosen=58"


@pytest.mark.parametrize("argv", [["--help"], ["config"], ["completion", "bash"]])
def test_a_closed_stdout_ends_quietly(argv: list[str]) -> None:
    """Output into a pipe whose reader is gone (`| head`) ends with exit 0 and no BrokenPipeError traceback."""
    process = subprocess.Popen([sys.executable, "-m", "worker", *argv], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, env={"PATH": "/usr/bin:/bin"}, cwd=ROOT)  # fmt: skip
    assert process.stdout is not None and process.stderr is not None
    process.stdout.close()  # before the interpreter has started: every write meets a closed pipe
    stderr = process.stderr.read().decode()
    assert process.wait(timeout=60) == ExitCode.OK, stderr
    assert "Traceback" not in stderr and "BrokenPipeError" not in stderr


def test_a_former_spelling_still_works_and_says_its_new_name() -> None:
    """`replay` alone runs `telemetry replay` (here: exit 3, MongoDB unreachable) with a `command_renamed` warning."""
    env = {"PATH": "/usr/bin:/bin", "MONGODB_URI": "mongodb://127.0.0.1:1/", "LOG_FORMAT": "json",
           "MONGODB_SERVER_SELECTION_TIMEOUT_MS": "300"}  # fmt: skip
    result = subprocess.run([sys.executable, "-m", "worker", "replay", "--dry-run"], capture_output=True,
                            text=True, env=env, timeout=60, cwd=ROOT)  # fmt: skip
    assert result.returncode == ExitCode.UNREACHABLE, result.stderr
    renamed = [line for line in result.stderr.splitlines() if '"command_renamed"' in line]
    assert len(renamed) == 1 and json.loads(renamed[0])["now"] == "telemetry replay"

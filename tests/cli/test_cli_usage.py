"""The `semdb` command's help and usage errors: in this process (typer's CliRunner), and the
installed script in a real process for its exit codes and streams."""

import pytest
import typer
from kit import semdb_app as run
from kit import semdb_cli

from semdb import __version__
from semdb.cli import app

COMMANDS = sorted(typer.main.get_command(app).commands)


def test_app_help_and_version():
    short, long = run("-h"), run("--help")
    assert short.stdout == long.stdout and "Commands:" in short.stdout and "Examples:" in short.stdout
    assert run().stdout == short.stdout  # bare `semdb`: the help, on stdout
    assert run("--version").stdout == f"semdb {__version__}\n"


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_short_help_with_examples_and_flags_as_flags(command):
    text = run(command, "-h").stdout
    assert text == run(command, "--help").stdout
    assert f"Usage: semdb {command} " in text
    examples = text.split("Examples:\n", 1)[1].splitlines()
    assert examples and all(line.strip().startswith(f"semdb {command}") for line in examples if line.strip())
    assert "<bool>" not in text and "╭" not in text  # flags are flags; no boxes


def test_the_installed_script_prints_the_same_help_and_usage_errors():
    for args, code in ((["query", "-h"], 0), (["query", "-k", "abc"], 2)):
        real, here = semdb_cli(*args, check=code), run(*args, check=code)
        assert (real.stdout, real.stderr) == (here.stdout, here.stderr), args


def test_query_help_shows_k_once():
    text = run("query", "-h").stdout
    assert "  -k <int>" in text and "--k" not in text


@pytest.mark.parametrize(
    "args,says",
    [
        (["query", "-k", "abc", "cat"], "semdb query: Invalid value for '-k'"),
        (["query", "-k", "0", "cat"], "k=0: ask for at least one result"),
        (["query", "--threads", "0", "cat"], "semdb query: Invalid value for '--threads'"),
        (["query", "--bogus"], "semdb query: No such option: --bogus; try `semdb query -h`"),
        (["info", "--json", "true"], "semdb info: Got unexpected extra argument(s) (true); try `semdb info -h`"),
        (["import"], "semdb import: Missing argument 'FILES'; try `semdb import -h`"),
        (["tag"], "semdb tag: Missing option '--labels'; try `semdb tag -h`"),
        (["serve", "--allow-remote", "--port", "0"], "--allow-remote goes with --shards"),
        (["nosuch"], "semdb: No such command 'nosuch'; try `semdb -h`"),
    ],
)
def test_usage_errors_are_one_line_with_exit_2(args, says):
    proc = run(*args, check=2)
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and says in lines[0], proc.stderr
    assert proc.stdout == ""

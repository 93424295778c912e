"""How the `semdb` command speaks when it is used wrongly or asked for help.

Usage errors (an unknown option, a missing argument, `-k abc`, a value out of range, and semdb's
own conflicting-option errors) are one line on stderr, "error: semdb CMD: what; try `semdb CMD -h`",
with exit code 2, like every other semdb error, never click's multi-line usage block or a boxed
panel. Help is click's plain layout (flags shown as flags) with an example or two per command.
"""

from __future__ import annotations

import sys

import typer
from typer.core import TyperGroup

from ..errors import display_path

# click's exception classes, whichever click typer runs on (recent typer carries its own copy)
_USAGE_ERROR = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "UsageError")
_CLICK_ERROR = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException")

HELP_OPTIONS = {"help_option_names": ["-h", "--help"]}


def examples(*lines: str) -> str:
    """A command's help epilog: the example command lines, kept as written (click's \\b)."""
    return "\b\nExamples:\n" + "\n".join(f"  {line}" for line in lines)


def usage_error_line(message: str, command_path: str) -> str:
    """The one line a usage error prints."""
    return f"error: {command_path}: {display_path(message.strip().rstrip('.'))}; try `{command_path} -h`"


class OneLineUsageGroup(TyperGroup):
    """The `semdb` group: its commands' usage errors print one line (see the module doc)."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        prog_name = prog_name or "semdb"
        if not standalone_mode:  # a caller that handles click's exceptions itself
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        try:
            code = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except _USAGE_ERROR as e:
            if e.ctx is not None and type(e).__name__ == "NoArgsIsHelpError":  # bare `semdb`: its help
                sys.stdout.write(e.ctx.get_help() + "\n")
                sys.exit(0)
            where = e.ctx.command_path if e.ctx is not None else prog_name
            sys.stderr.write(usage_error_line(e.format_message(), where) + "\n")
            sys.exit(e.exit_code)
        except _CLICK_ERROR as e:
            sys.stderr.write(f"error: {display_path(e.format_message())}\n")
            sys.exit(e.exit_code)
        except typer.Abort:
            sys.stderr.write("aborted\n")
            sys.exit(1)
        sys.exit(code if isinstance(code, int) else 0)

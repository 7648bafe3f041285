"""Write docs/reference/cli.md, the reference of the `lily` command, from its argparse parser.

    .venv/bin/python tools/gen_cli_reference.py          # (re)writes the file
    .venv/bin/python tools/gen_cli_reference.py --check  # exit 1 if the file is out of date

Every command and sub-command of `lily_dagster.cli.build_parser()`, walked recursively: its
help, its usage line and a table of its arguments (defaults and help included).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUTPUT = ROOT / "docs" / "reference" / "cli.md"
REGENERATE = ".venv/bin/python tools/gen_cli_reference.py"
USAGE_WIDTH = 100  # the usage lines' width: fixed, whatever the terminal's

TYPE_NAMES = {int: "integer", float: "number", str: "text"}


def _subcommands(
    parser: argparse.ArgumentParser,
) -> Iterator[tuple[str, str, argparse.ArgumentParser]]:
    """(name, help, parser) of each sub-command of `parser`, in the order they were added."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {choice.dest: choice.help or "" for choice in action._choices_actions}
            for name, sub in action.choices.items():
                yield name, helps.get(name, ""), sub


def _arguments(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    return [
        action
        for action in parser._actions
        if not isinstance(action, argparse._HelpAction | argparse._SubParsersAction)
    ]


def _usage(parser: argparse.ArgumentParser) -> str:
    formatter = argparse.HelpFormatter(parser.prog, width=USAGE_WIDTH)
    formatter.add_usage(parser.usage, parser._actions, parser._mutually_exclusive_groups, prefix="")
    return formatter.format_help().strip()


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _value(action: argparse.Action) -> str:
    """What the argument takes: a flag, or a value of a type (how many, if not one)."""
    if action.nargs == 0:
        return "flag"
    kind = action.type
    if kind is None:
        name = "text"
    elif kind in TYPE_NAMES:
        name = TYPE_NAMES[kind]
    else:  # a checking function such as tenant_arg: its name says what it takes
        name = getattr(kind, "__name__", "value").strip("_").removesuffix("_arg")
    metavar = action.metavar or (action.dest.upper() if action.option_strings else action.dest)
    if action.choices is not None:
        name = "one of " + ", ".join(f"`{choice}`" for choice in action.choices)
    if action.nargs == "+":
        name = f"{name}, one or more"
    elif action.nargs == "*":
        name = f"{name}, any number"
    return f"`{metavar}` ({name})"


def _default(action: argparse.Action) -> str:
    if action.required:
        return "required"
    if isinstance(action, argparse._AppendAction):
        return "none; repeatable"
    if action.default is None or action.default is argparse.SUPPRESS:
        return "none"
    if action.nargs == 0:
        return "off" if action.default is False else f"`{action.default}`"
    return f"`{action.default}`"


def _help(action: argparse.Action, prog: str) -> str:
    text = action.help or ""
    if "%" in text:  # argparse's own expansion: %(default)s, %(prog)s...
        text = text % {**vars(action), "prog": prog}
    return text


def _table(parser: argparse.ArgumentParser) -> list[str]:
    arguments = _arguments(parser)
    if not arguments:
        return []
    lines = ["| argument | value | default | description |", "| --- | --- | --- | --- |"]
    for action in arguments:
        name = ", ".join(f"`{o}`" for o in action.option_strings) or f"`{action.dest}`"
        value, default = _value(action), _default(action)
        lines.append(f"| {name} | {value} | {default} | {_cell(_help(action, parser.prog))} |")
    return [*lines, ""]


def _body(parser: argparse.ArgumentParser) -> Iterator[str]:
    """A command's usage line, its arguments, and its sub-commands, if any."""
    yield from ("```", _usage(parser), "```", "")
    yield from _table(parser)
    subcommands = list(_subcommands(parser))
    if subcommands:
        yield "| command | what it does |"
        yield "| --- | --- |"
        for name, help_text, sub in subcommands:
            yield f"| [`{name}`](#{_anchor(sub.prog)}) | {_cell(help_text)} |"
        yield ""


def _section(parser: argparse.ArgumentParser, text: str, depth: int) -> Iterator[str]:
    """The section of one command, then those of its sub-commands, a level deeper."""
    yield f"{'#' * min(depth, 6)} `{parser.prog}`"
    yield ""
    if text:
        yield _cell(text[0].upper() + text[1:]) + "."
        yield ""
    yield from _body(parser)
    for _name, help_text, sub in _subcommands(parser):
        yield from _section(sub, help_text, depth + 1)


def _anchor(prog: str) -> str:
    """GitHub's anchor of a heading `` `prog` ``: lower case, spaces to dashes."""
    return "".join(c for c in prog.lower().replace(" ", "-") if c.isalnum() or c in "-_")


def render() -> str:
    from lily_dagster.cli import build_parser

    parser = build_parser()
    lines = [
        "# The `lily` command",
        "",
        f"<!-- Generated from lily_dagster.cli.build_parser() by `{REGENERATE}`; do not edit: "
        "run it again (the tests check with `--check`). -->",
        "",
        _cell(parser.description or ""),
        "",
        "An error prints one line, starting `lily: error:`, and exits non-zero (2 for a usage "
        "or configuration error). Every command takes `-h`/`--help`.",
        "",
        *_body(parser),
    ]
    for _name, help_text, sub in _subcommands(parser):
        lines.extend(_section(sub, help_text, 2))
    return "\n".join(lines).rstrip("\n") + "\n"


def main(argv: list[str] | None = None) -> int:
    cli = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    cli.add_argument("--check", action="store_true", help="exit 1 if the file is out of date")
    args = cli.parse_args(argv)
    text = render()
    relative = OUTPUT.relative_to(ROOT)
    if args.check:
        if not OUTPUT.is_file() or OUTPUT.read_text() != text:
            print(f"{relative} is out of date: run `{REGENERATE}`", file=sys.stderr)
            return 1
        return 0
    OUTPUT.parent.mkdir(parents=True, exist_ok=True)
    OUTPUT.write_text(text)
    print(f"wrote {relative}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

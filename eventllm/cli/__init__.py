"""The `eventllm` command: one module per subcommand (its parser and its `cmd_*`), on shared option types
(`common`). Each subcommand parses, calls the library and prints; a library error becomes one line and exit 2."""

from __future__ import annotations

import argparse
import sys

from eventllm.cli import build, calibrate, demo, evaluate, generate, info, simulate, train
from eventllm.cli import map as map_
from eventllm.cli.common import Parser
from eventllm.errors import EventLLMError

COMMANDS = (demo, info, evaluate, calibrate, build, map_, simulate, generate, train)


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog="eventllm", description="Activation-sparse LLMs on event-driven neuromorphic hardware.")
    p.add_argument("--version", action="version", version=f"eventllm {__import__('eventllm').__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for module in COMMANDS:
        module.add_parser(sub)
    return p


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    """Each subcommand's parser, by name."""
    return next(a for a in parser._subparsers._group_actions if isinstance(a, argparse._SubParsersAction)).choices


def _config_argv(parser: argparse.ArgumentParser, command: str, path: str) -> list[str]:
    """A recipe file's settings as command-line options of `command` (keys are its long options without the dashes),
    so that argparse validates them as it validates the command line, which comes after them and wins."""
    from eventllm.config import read_toml
    from eventllm.errors import ConfigError

    sub = _subcommands(parser)[command]
    known = {s for a in sub._actions for s in a.option_strings if s.startswith("--")} - {"--config", "--help"}
    argv: list[str] = []
    for key, value in read_toml(path, "recipe").items():
        opt = "--" + key.replace("_", "-")
        if opt not in known or isinstance(value, (dict, list)):
            raise ConfigError(f"{path}: {key!r} is not an option of `eventllm {command}`; the keys are its long options "
                              f"without the dashes (see `eventllm {command} --help`)")
        if value is True:
            argv.append(opt)
        elif value is not False:
            argv += [opt, str(value)]
    return argv


def in_cli_words(message: str, parser: argparse.ArgumentParser) -> str:
    """A library error in the words of the command line: the library names an option a user set by its Python
    name in backticks (`max_ppl_increase`); the command line calls it --max-ppl-increase."""
    import re

    flags = {a.dest: max(a.option_strings, key=len) for s in _subcommands(parser).values() for a in s._actions if a.option_strings}
    return re.sub(r"`([a-z][a-z0-9_]*)`", lambda m: flags.get(m.group(1), m.group(0)), message)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        if getattr(args, "recipe", None):
            try:
                recipe = _config_argv(parser, args.command, args.recipe)
            except EventLLMError as e:
                print(f"eventllm {args.command}: error: {e}", file=sys.stderr)
                return 2
            rest = argv[argv.index(args.command) + 1:]
            args = parser.parse_args([args.command, *recipe, *rest])
    except KeyboardInterrupt:
        print("eventllm: interrupted", file=sys.stderr)
        return 130
    from eventllm.distributed import is_main_process

    if not is_main_process():  # under torchrun only rank 0 prints
        import os

        sys.stdout = open(os.devnull, "w")
        if hasattr(args, "quiet"):
            args.quiet = True
    try:
        return args.func(args)
    except EventLLMError as e:
        print(f"eventllm {args.command}: error: {in_cli_words(str(e), parser)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"eventllm {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into `head` and the like: stop quietly, as Unix tools do
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141

"""The command lines' shared parser: HfArgumentParser with a --help a newcomer can read (the description first,
kept as written; a flag's default shown only where it says something; each --no_* flag described as what it does)."""

import argparse


class HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """The description as written; "(default: …)" added only where the default is set and the help does not already
    name it."""

    def _get_help_string(self, action):
        text = action.help or ""
        if action.default is None or action.default is argparse.SUPPRESS or action.nargs == 0 or "default" in text:
            return text
        return super()._get_help_string(action)


def argument_parser(dataclass_types, description: str, usage: str, **kwargs):
    """HfArgumentParser over `dataclass_types` with `usage` and `description` at the top of --help, HelpFormatter,
    and each boolean's --no_<flag> complement described as turning --<flag> off (transformers copies the flag's own
    help to it). (transformers is imported here: gpu_lease.py imports this module before it installs the wheels.)"""
    from transformers import HfArgumentParser

    parser = HfArgumentParser(dataclass_types, description=description, usage=usage, formatter_class=HelpFormatter,
                              **kwargs)
    for action in parser._actions:
        negative = next((o for o in action.option_strings if o.startswith("--no_")), None)
        if negative:
            action.help = f"Turn --{negative[len('--no_'):]} off."
    return parser


# the errors a user's input causes (a flag, a file, a path): each already names the problem and the fix
USER_ERRORS = (ValueError, TypeError, FileNotFoundError, FileExistsError, NotADirectoryError)


def run_command(main) -> None:
    """Runs a script's `main()`: an error the user's input caused ends in one line on stderr (exit 2, as argparse's
    own refusals) instead of a traceback; FUSION_LSTM_TRACEBACK=1 shows the traceback too."""
    import os
    import sys

    try:
        main()
    except USER_ERRORS as error:
        if os.environ.get("FUSION_LSTM_TRACEBACK") == "1":
            raise
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)

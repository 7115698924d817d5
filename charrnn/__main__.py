"""The `charrnn` command: `python -m charrnn` and the console script both run `main`.

Importing the CLI (Typer, Rich) takes a moment, and a command then imports PyTorch; Ctrl-C in either is
the user stopping the command, not a bug, so it ends with one line and status 130, never a traceback.
Only `sys` is imported at the top of this module for that reason.
"""

import sys


def main() -> None:
    """Console-script entry point."""
    try:
        from charrnn.cli import app

        app()
    except KeyboardInterrupt:  # the CLI turns one inside a command into this line itself
        print("error: aborted", file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    main()

"""Errors a user can act on, and the one wrapper every command's ``main`` runs under.

A ``UserError`` is printed as one paragraph (what was wrong, how to fix it) and the process
exits with its code: no traceback. Anything else is a bug and keeps its traceback.
"""
from __future__ import annotations

import functools
import sys
from typing import Callable, TypeVar

F = TypeVar("F", bound=Callable[..., object])


class UserError(Exception):
    """Bad input or a broken environment: the message says what and how to fix it."""

    exit_code = 1


class ConfigError(UserError):
    """A config file or override is invalid."""

    exit_code = 2


def report(error: UserError) -> None:
    print(f"error: {error}", file=sys.stderr, flush=True)


def cli_main(fn: F) -> F:
    """Run ``fn``; turn a UserError into its message and exit code, Ctrl-C into exit 130."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except UserError as error:
            report(error)
            sys.exit(error.exit_code)
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr, flush=True)
            sys.exit(130)

    return wrapper  # type: ignore[return-value]

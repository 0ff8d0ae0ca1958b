"""Errors a user can act on, and the one wrapper every command's ``main`` runs under.

A ``UserError`` is printed as one paragraph (what was wrong, how to fix it) and the process
exits with its code: no traceback. Anything else is a bug and keeps its traceback.
"""
from __future__ import annotations

import functools
import sys
from typing import Callable, TypeVar

F = TypeVar("F", bound=Callable[..., object])

# Every command's exit codes, launcher and trainer alike (scripts and the launcher branch on them).
EXIT_USER_ERROR = 1
EXIT_CONFIG_ERROR = 2
EXIT_OVER_BUDGET = 3  # trainer.cost's verdict; `launcher run` stops before training on it
EXIT_INTERRUPTED = 130  # Ctrl-C: 128 + SIGINT, the shell's convention


class UserError(Exception):
    """Bad input or a broken environment: the message says what and how to fix it."""

    exit_code = EXIT_USER_ERROR


class ConfigError(UserError):
    """A config file or override is invalid."""

    exit_code = EXIT_CONFIG_ERROR


class OverBudgetError(UserError):
    """The projected cost exceeds ``budget.max_cost``."""

    exit_code = EXIT_OVER_BUDGET


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
            sys.exit(EXIT_INTERRUPTED)

    return wrapper  # type: ignore[return-value]

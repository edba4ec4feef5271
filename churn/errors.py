"""Errors the CLI turns into a clear message and a distinct exit code.

Exit codes follow BSD ``sysexits.h`` so batch schedulers can tell bad data from bad config.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pandas stays unimported until data is really handled (fast `churn --help`)
    import pandas as pd

EXIT_USAGE = 64
EXIT_DATA = 65
EXIT_NO_INPUT = 66
EXIT_SOFTWARE = 70
EXIT_TEMPFAIL = 75  # resource busy (another process holds the lock): try again later
EXIT_CONFIG = 78


class ChurnError(Exception):
    """Base class for expected failures: the CLI prints the message, not a traceback."""

    exit_code = EXIT_SOFTWARE


class DataError(ChurnError):
    """Input data breaks the data contract. Names the table, the column, a count and examples."""

    exit_code = EXIT_DATA

    def __init__(
        self,
        table: str,
        column: str | None,
        problem: str,
        count: int | None = None,
        examples: pd.DataFrame | Sequence[object] | None = None,
    ) -> None:
        self.table = table
        self.column = column
        self.problem = problem
        self.count = count
        where = f"table '{table}'" + (f", column '{column}'" if column else "")
        msg = f"{where}: {problem}"
        if count is not None:
            msg += f" ({count} row{'s' if count != 1 else ''})"
        if examples is not None and len(examples) > 0:
            if hasattr(examples, "to_string"):  # a DataFrame
                shown = examples.head(5).to_string(max_colwidth=40)
            else:
                shown = ", ".join(repr(x) for x in list(examples)[:5])
            msg += "\n  examples:\n    " + shown.replace("\n", "\n    ")
        super().__init__(msg)


class UsageError(ChurnError):
    """The command line asks for something the inputs cannot give (e.g. ``--as-of`` past the data's end)."""

    exit_code = EXIT_USAGE


def no_active_customers(as_of: pd.Timestamp) -> DataError:
    """The error ``churn score`` and ``churn features`` raise when the population at the cutoff is empty."""
    import pandas as pd

    return DataError("customers", None, f"no customer is active at {pd.Timestamp(as_of).date()}")


class ConfigError(ChurnError):
    """A configuration file is missing, unreadable or invalid."""

    exit_code = EXIT_CONFIG


class InputNotFoundError(ChurnError):
    """A required input (data folder, table file, model) does not exist."""

    exit_code = EXIT_NO_INPUT

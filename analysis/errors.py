"""Bad input to the analysis (a file, a class name, a block, a number of resamples).

The rendering modules (stats, figures, report, curves) import no torch, and ``senet.errors`` would
load the whole library with it, so the analysis keeps its own error type; every ``senet`` command of
this package names it in ``user_errors``, so the CLI prints it as one line like a ``UserError``.
"""


class AnalysisInputError(ValueError):
    """What the user asked the analysis for does not exist or makes no sense."""


class ReportInputError(AnalysisInputError):
    """A table or a choice the report cannot use (unreadable, ambiguous, lacking a column): the CLI
    prints it as one line."""

"""The metrics table: every metric of a split, with how each view names, shows and checks it.

One entry per metric: its name (the key in a record's split metrics, and `<split>_<name>_mean` in the
CSV), label, unit, which way is better, whether every record has it, whether a report's claim can be
of it, and its tooltip on the page. The record's validation (store.SPLIT), the leaderboard's columns
(CSV, markdown), the claims (claims.py), the page's headers and tooltips, the runner's summaries and
the gate all read it, so that a new metric is one entry here plus its computation in
metrics.compute_metrics. An optional metric (`required=False`) may be missing from a record (records
made before it was measured, or runs it does not apply to): every view shows it as missing ("—").

The readers keep their names (claims.CLAIM_NAMES, leaderboard.METRICS, page.MEASURED_TIPS, ...), as
`TableView`s: live views of METRIC_TABLE, read at each use, so that an entry added to the table (a
test's fake one too) reaches every view. Torch-free and importing nothing of the package, so that
claims.py and schema.py can read it; metrics.py, which needs torch, re-exports it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class Metric:
    """One metric of a split, as the record, the board, the claims and the page know it."""

    name: str  # its key in a record's split metrics and in the CSV (`test_<name>_mean`)
    label: str  # in claims and headers: 'within-one', 'MSE raw'
    unit: Literal["fraction", "sum", "sum²"]  # fraction: 0..1, shown as %; errors in sums (MSEs: squared sums)
    better: Literal["higher", "lower"]  # which way a better model moves it
    required: bool  # in every record; optional: missing in older records and where it does not apply ("—")
    claimable: bool  # a report's claim can be of it (claims.Claim.metric): shown beside such claims
    tip: str  # the page's tooltip of its measured column
    board: bool = True  # summarised over seeds on the leaderboard (CSV, markdown, page)
    shown: bool = False  # in the page's default view (the numbers a reader compares), on the ranked split
    finite: bool = True  # False: a record may hold NaN or inf (the unrounded output of a diverged run)

    def __post_init__(self):
        if self.claimable and not self.board:  # a claim stands beside its metric's measured column
            raise ValueError(f"metric {self.name}: claimable, so it needs its column on the board")

    @property
    def percent(self) -> bool:
        """A fraction, shown as a percentage."""
        return self.unit == "fraction"

    @property
    def header(self) -> str:
        """Its measured column's header: 'within-one %', 'MSE raw'."""
        return f"{self.label} %" if self.percent else self.label


# In the order of the tables' columns. The computation of each is in metrics.compute_metrics.
METRIC_TABLE: dict[str, Metric] = {m.name: m for m in (
    Metric("exact", "exact", "fraction", "higher", required=True, claimable=True, shown=True,
           tip="measured here: mean over seeds ± half-width of the 95% confidence interval"),
    Metric("within_one", "within-one", "fraction", "higher", required=True, claimable=True, shown=True,
           tip="measured here: |predicted - true| ≤ 1"),
    Metric("mse_raw", "MSE raw", "sum²", "lower", required=False, claimable=True, shown=True, finite=False,
           tip="measured here, on the unrounded output (the reports' MSE is of this kind)"),  # absent in early records
    Metric("mse", "MSE (rounded)", "sum²", "lower", required=True, claimable=True,
           tip="measured here, on rounded predictions"),
    Metric("rmse", "RMSE", "sum", "lower", required=True, claimable=False, board=False,  # MSE's root: not summarised
           tip="measured here, on rounded predictions"),
    Metric("mae", "MAE", "sum", "lower", required=True, claimable=True, tip="measured here"),
    Metric("digit_accuracy", "per-digit", "fraction", "higher", required=False, claimable=False,
           tip="measured here: the fraction of the four digits read right, for a digit head on data with digit "
               "labels (— otherwise)"),
)}  # fmt: skip


class TableView(Mapping):
    """A live, read-only view of METRIC_TABLE: the names of the metrics that `keep` accepts, in table order,
    each mapped to `value(metric)` (the Metric itself by default). Read at each use, never copied."""

    def __init__(self, keep: Callable[[Metric], bool] = lambda m: True,
                 value: Callable[[Metric], object] = lambda m: m):
        self._keep, self._value = keep, value

    def __getitem__(self, name: str) -> object:
        metric = METRIC_TABLE[name]
        if not self._keep(metric):
            raise KeyError(name)
        return self._value(metric)

    def __iter__(self) -> Iterator[str]:
        return iter([name for name, metric in METRIC_TABLE.items() if self._keep(metric)])

    def __len__(self) -> int:
        return sum(1 for _ in self)

    def __repr__(self) -> str:
        return f"TableView({dict(self)!r})"

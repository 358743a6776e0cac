"""A report's claimed numbers: the `Claim` a recipe states, and the one way a claim is written.

The registry (`digitsum-bench list`), the markdown leaderboard and the web page all write claims
with these functions, so that they cannot disagree. Records hold claims as plain dicts
(`dataclasses.asdict` of a Claim); the functions take those. No torch, no pandas here.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal

from .errors import BenchError
from .metric_table import TableView

# the metrics a claim can be of (metric_table: `claimable`), with the name a table gives them
CLAIM_NAMES = TableView(lambda m: m.claimable, lambda m: m.label)
PERCENT = TableView(lambda m: m.percent)  # fractions shown as percentages


@dataclass(frozen=True)
class Claim:
    """A number a report claims; always shown as a claim, never as a measurement."""

    # one of CLAIM_NAMES (metric_table's claimable metrics): accuracies as fractions 0..1; "mse_raw": MSE of the
    # unrounded output (the reports' MSE), "mse": of rounded sums
    metric: str
    value: float | None  # None where the report gives words, not a number (the note says them)
    split: Literal["val", "test"]  # the split of the course data the report quoted it on
    note: str = ""  # e.g. "after 87 epochs", "approximately"

    def __post_init__(self):
        if self.metric not in CLAIM_NAMES:  # the table, not a Literal, says which: checked when a recipe is made
            raise BenchError(f"claim of {self.metric!r}: a claim is of one of {', '.join(CLAIM_NAMES)}")
        if self.value is not None and self.metric in PERCENT and not 0 <= self.value <= 1:  # 93.5 meant as %
            raise BenchError(f"claim of {self.metric} = {self.value}: a fraction, 0..1 (93.5% is 0.935)")


def claim_number(claim: dict) -> str:
    """The claimed number alone: '94.92%' for accuracies, '0.264' otherwise; the report's words
    where it gives no number."""
    value = claim["value"]
    if value is None:
        return claim["note"]
    return f"{value * 100:.4g}%" if claim["metric"] in PERCENT else f"{value:.3g}"


def claim_value(claim: dict) -> str:
    """'94.92%', '0.39 (approximately)', ": 'unable to learn'" (words where the report gives no number)."""
    if claim["value"] is None:
        return f": {claim_number(claim)}"
    return claim_number(claim) + (f" ({claim['note']})" if claim["note"] else "")


def claim_text(claim: dict) -> str:
    """One claim with its split and metric: 'val exact 94.92%', "test exact: 'unable to learn'"."""
    name = CLAIM_NAMES.get(claim["metric"], claim["metric"])
    return f"{claim['split']} {name} {claim_value(claim)}".replace(f"{name} :", f"{name}:")


def claims_text(claims: tuple[Claim, ...] | list[dict]) -> str:
    """All of a recipe's claims as one line, 'val exact 94.92%, val MSE raw 0.264'; '-' where there are none."""
    return ", ".join(claim_text(c if isinstance(c, dict) else asdict(c)) for c in claims) or "-"

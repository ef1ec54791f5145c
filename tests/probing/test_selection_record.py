"""The selection record: what select writes is what every reader gets back, and a file it cannot trust is refused in one line."""

from __future__ import annotations

import json

import pytest

from plmexit.cli import main
from plmexit.errors import InputError, SelectionError
from plmexit.probing.choice import select_layer
from plmexit.probing.selection import FoldChoice, Selection

from probe_tables import INNER, TEST, as_selection, hand_selection, long_table


@pytest.fixture
def selection() -> Selection:
    return as_selection(select_layer(long_table(INNER, TEST), "spearman"), dms_id="TOY", fold_scheme="fold_random_5")


def test_a_selection_survives_its_json_round_trip(selection, tmp_path):
    selection.to_json(tmp_path / "s.json")

    back = Selection.from_json(tmp_path / "s.json")

    assert back == selection
    assert isinstance(back.folds[0], FoldChoice) and back.fold_layers == (2, 2, 3) and back.task_name == "TOY"
    assert back.mean_test_score_by_layer[4] == selection.mean_test_score_by_layer[4]  # JSON's string keys come back as layers
    assert not list(tmp_path.glob(".*"))  # written through a temporary sibling, renamed into place


def test_the_json_keeps_the_layout_readers_and_figures_know(selection, tmp_path):
    selection.to_json(tmp_path / "s.json")
    data = json.loads((tmp_path / "s.json").read_text())

    assert list(data) == [f for f in Selection.__dataclass_fields__]
    assert data["folds"][0]["layer"] == 2 and data["bootstrap"]["level"] == 0.95 and data["fold_layers"] == [2, 2, 3]
    assert data["mean_test_score_by_layer"]["4"] == selection.mean_test_score_by_layer[4]


@pytest.mark.parametrize("key", ["test_unit", "deployed_layer", "verdict", "chance_score"])
def test_a_missing_key_is_one_line_naming_the_file_and_the_key(tmp_path, key):
    data = hand_selection("m", "t", 2, [1, 2])
    del data[key]
    (tmp_path / "old.json").write_text(json.dumps(data))

    with pytest.raises(SelectionError, match=rf"^{tmp_path / 'old.json'}: lacks key '{key}' \(written by an older plmexit, or by hand\); rerun `plmexit select`$"):
        Selection.from_json(tmp_path / "old.json")


@pytest.mark.parametrize(
    ("change", "key", "expected"),
    [
        ({"n_layers": "six"}, "n_layers", "an integer"),
        ({"deployed_layer": 1.5}, "deployed_layer", "an integer or null"),
        ({"final_score": None}, "final_score", "a number"),
        ({"fold_layers": 3}, "fold_layers", "a list"),
        ({"bootstrap": None}, "bootstrap", "an object"),
    ],
)
def test_an_odd_value_is_one_line_naming_the_key_and_what_was_expected(tmp_path, change, key, expected):
    (tmp_path / "odd.json").write_text(json.dumps({**hand_selection("m", "t", 2, [1, 2]), **change}))

    with pytest.raises(SelectionError, match=rf"odd\.json: key '{key}' holds .*, not {expected}; rerun `plmexit select`$"):
        Selection.from_json(tmp_path / "odd.json")


def test_a_nested_key_is_named_by_its_path(tmp_path):
    data = hand_selection("m", "t", 2, [1, 2])
    del data["folds"][1]["layer"]
    (tmp_path / "s.json").write_text(json.dumps(data))

    with pytest.raises(SelectionError, match=r"lacks key 'folds\[1\]\.layer'"):
        Selection.from_json(tmp_path / "s.json")


def test_unreadable_files_and_other_json_are_refused(tmp_path):
    (tmp_path / "list.json").write_text("[1, 2]")
    (tmp_path / "broken.json").write_text("{")
    with pytest.raises(SelectionError, match=r"list\.json: the file is not a JSON object; rerun `plmexit select`"):
        Selection.from_json(tmp_path / "list.json")
    for path in (tmp_path / "broken.json", tmp_path / "absent.json"):
        with pytest.raises(InputError, match=rf"{path.name}: not a readable selection JSON"):  # a SelectionError is an InputError
            Selection.from_json(path)


def test_keys_beyond_the_record_are_left_alone(tmp_path):
    data = hand_selection("m", "t", 2, [1, 2])
    (tmp_path / "s.json").write_text(json.dumps({**data, "added_by_a_newer_plmexit": 1}))
    assert Selection.from_json(tmp_path / "s.json") == Selection.from_dict(data, "s")


def test_a_reader_step_reports_an_old_selection_in_one_line(tmp_path, capsys):
    data = hand_selection("m", "t", 2, [1, 2])
    del data["test_unit"]
    (tmp_path / "old.json").write_text(json.dumps(data))

    code = main(["summarize", str(tmp_path / "old.json"), "--out", str(tmp_path / "best.tsv")])

    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1 and "old.json: lacks key 'test_unit'" in err[0] and "rerun `plmexit select`" in err[0]
    assert not (tmp_path / "best.tsv").exists()

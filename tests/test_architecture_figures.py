"""The redrawn architecture figures name code that exists, and their boxes do not overlap."""

from __future__ import annotations

import importlib
from itertools import combinations

import matplotlib
import pytest

from cormult_lib.tutorial.architecture import DIAGRAMS, Box, draw

matplotlib.use("Agg")


def _resolve(ref: str) -> object:
    module, attribute = ref.split(":")
    target = importlib.import_module(module)
    for part in attribute.split("."):
        target = getattr(target, part)
    return target


@pytest.mark.parametrize("name", sorted(DIAGRAMS))
def test_every_box_names_code_that_exists(name):
    for box in DIAGRAMS[name].boxes:
        assert _resolve(box.ref) is not None, box


def test_a_moved_name_is_caught():
    with pytest.raises(AttributeError):
        _resolve("cormult_lib.models.mult:NoSuchModel")


def _overlap(a: Box, b: Box) -> bool:
    return (abs(a.x - b.x) < (a.width + b.width) / 2
            and abs(a.y - b.y) < (a.height + b.height) / 2)


@pytest.mark.parametrize("name", sorted(DIAGRAMS))
def test_boxes_fit_the_canvas_without_overlap_and_arrows_join_boxes(name):
    diagram = DIAGRAMS[name]
    keys = [box.key for box in diagram.boxes]
    assert len(set(keys)) == len(keys)
    for box in diagram.boxes:
        assert box.width / 2 <= box.x <= 12 - box.width / 2, box
        assert box.height / 2 <= box.y <= 7 - box.height / 2, box
    for a, b in combinations(diagram.boxes, 2):
        assert not _overlap(a, b), (a.key, b.key)
    for start, end, _ in diagram.arrows:
        assert start in keys and end in keys
    fig = draw(diagram)
    texts = {t.get_text() for t in fig.axes[0].texts}
    assert {box.title for box in diagram.boxes} <= texts

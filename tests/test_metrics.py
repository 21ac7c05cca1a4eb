"""Metrics: cIoU, gIoU, N-acc, T-acc, Acc@0.5, mIoU, including their edge cases."""

from __future__ import annotations

import math

import numpy as np
import pytest

from text4seg_ros.metrics import MaskMetrics, MeanIoU, RecAccuracy, box_iou, mask_iou, mask_to_box


def masks(*cells: tuple[int, int], size: tuple[int, int] = (4, 4)) -> np.ndarray:
    out = np.zeros(size, bool)
    for y, x in cells:
        out[y, x] = True
    return out


def test_ciou_and_giou_values() -> None:
    m = MaskMetrics()
    assert m.update(masks((0, 0), (0, 1)), masks((0, 1))) == 0.5  # I=1, U=2
    assert m.update(masks((1, 1)), masks((1, 1), (1, 2), (1, 3), (2, 3))) == 0.25  # I=1, U=4
    out = m.compute()
    assert out["cIoU"] == pytest.approx(2 / 6)
    assert out["gIoU"] == pytest.approx((0.5 + 0.25) / 2)
    assert out["queries"] == 2


def test_empty_on_empty_is_one_for_giou_and_adds_nothing_to_ciou() -> None:
    m = MaskMetrics()
    m.update(masks(), masks())
    m.update(masks((0, 0)), masks((0, 0)))
    assert m.giou == 1.0 and m.ciou == 1.0
    m.update(masks((3, 3)), masks())  # false positive on an empty target
    assert m.giou == pytest.approx(2 / 3) and m.ciou == pytest.approx(1 / 2)


def test_n_acc_and_t_acc() -> None:
    m = MaskMetrics()
    assert math.isnan(m.n_acc) and math.isnan(m.t_acc) and math.isnan(m.giou)
    m.update(masks(), masks())  # empty target predicted empty
    m.update(masks((0, 0)), masks())  # empty target predicted non-empty
    m.update(masks(), masks((1, 1)))  # empty prediction on a target: IoU 0
    m.update(masks((2, 2)), masks((1, 1)))  # non-empty prediction, wrong place: still T-hit
    assert m.n_acc == 0.5 and m.t_acc == 0.5
    assert m.compute()["gIoU"] == pytest.approx(0.25)


def test_all_foreground() -> None:
    full = np.ones((3, 5), bool)
    assert mask_iou(full, full) == 1.0
    assert mask_iou(full, masks((0, 0), size=(3, 5))) == pytest.approx(1 / 15)
    assert mask_to_box(full) == (0, 0, 5, 3)


def test_rec_accuracy_strictly_above_half_and_empty_is_miss() -> None:
    acc = RecAccuracy()
    assert box_iou((0, 0, 2, 1), (0, 0, 1, 1)) == 0.5
    assert not acc.update((0, 0, 2, 1), (0, 0, 1, 1))  # exactly 0.5: a miss
    assert acc.update((0, 0, 10, 10), (0, 0, 10, 9))
    assert not acc.update(masks(), (0, 0, 2, 2))  # empty mask: a miss
    assert acc.update(masks((0, 0), (1, 1)), (0, 0, 2, 2))  # mask -> tight box (0, 0, 2, 2)
    assert acc.compute() == {"Acc@0.5": 0.5, "queries": 4}
    assert box_iou(None, (0, 0, 1, 1)) == 0.0 and box_iou((0, 0, 0, 5), (0, 0, 0, 5)) == 0.0


def test_mean_iou_over_class_list() -> None:
    miou = MeanIoU(["others", "cup", "plate", "fork"])
    target = np.array([[0, 1], [2, 2]])
    pred = np.array([[0, 1], [2, 1]])
    miou.update(pred, target)
    per = miou.per_class()
    assert per["others"] == 1.0 and per["cup"] == 0.5 and per["plate"] == 0.5
    assert math.isnan(per["fork"])  # never seen: left out of the mean
    assert miou.compute() == {"mIoU": pytest.approx(2 / 3), "classes_seen": 3}
    with pytest.raises(ValueError, match="class indices"):
        miou.update(np.array([[7]]), np.array([[0]]))


def test_ignore_index_and_shape_errors() -> None:
    miou = MeanIoU(["others", "cup"], ignore_index=255)
    miou.update(np.array([[1, 0]]), np.array([[1, 255]]))
    assert miou.compute()["mIoU"] == 1.0
    with pytest.raises(ValueError, match="shape"):
        MaskMetrics().update(np.zeros((2, 2)), np.zeros((2, 3)))


def test_merge_adds_every_count() -> None:
    a, b, both = MaskMetrics(), MaskMetrics(), MaskMetrics()
    for pred, target, acc in [
        (masks((0, 0), (0, 1)), masks((0, 1)), a),
        (masks(), masks(), b),
        (masks((1, 1)), masks((1, 1), (2, 2)), b),
    ]:
        acc.update(pred, target)
        both.update(pred, target)
    assert a.merge(b) is a and a == both

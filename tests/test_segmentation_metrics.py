"""Segmentation metrics against hand-computed values: ignore pixels, absent classes, JSON layout."""
import json
import math

import numpy as np
import pytest

from simclr_tf.evaluation.segmentation_metrics import (confusion_matrix, format_metrics, metrics_from_confusion,
                                                       per_class_iou, upsampled_label_map)

# 4 classes. Truth and prediction of 3x4 pixels; 255 = ignore.
TRUTH = np.array([[0, 0, 1, 1],
                  [0, 2, 1, 255],
                  [2, 2, 255, 255]])
# Class 3 is predicted only under ignore pixels, where nothing counts: it stays absent.
PRED = np.array([[0, 1, 1, 1],
                 [0, 2, 2, 3],
                 [2, 0, 3, 3]])


def test_confusion_matrix_leaves_ignore_pixels_out():
    matrix = confusion_matrix(TRUTH, PRED, num_classes=4)
    # Labelled pixels: 9. Rows = truth, columns = prediction.
    expected = np.zeros((4, 4), int)
    expected[0, 0] = 2   # (0,0), (1,0)
    expected[0, 1] = 1   # (0,1)
    expected[1, 1] = 2   # (0,2), (0,3)
    expected[1, 2] = 1   # (1,2)
    expected[2, 2] = 2   # (1,1), (2,0)
    expected[2, 0] = 1   # (2,1)
    np.testing.assert_array_equal(matrix, expected)
    assert matrix.sum() == 9


def test_iou_pixel_accuracy_and_absent_class_by_hand():
    metrics = metrics_from_confusion(confusion_matrix(TRUTH, PRED, num_classes=4), num_samples=1)
    # class 0: TP 2, FP 1 (truth 2 predicted 0), FN 1 (predicted 1) -> 2/4
    # class 1: TP 2, FP 1 (truth 0 predicted 1), FN 1 (predicted 2) -> 2/4
    # class 2: TP 2, FP 1 (truth 1 predicted 2), FN 1 (predicted 0) -> 2/4
    # class 3: absent from both -> None, left out of the mean
    assert metrics["per_class_iou"] == [0.5, 0.5, 0.5, None]
    assert metrics["mean_iou"] == pytest.approx(0.5)
    assert metrics["pixel_accuracy"] == pytest.approx(6 / 9)
    assert metrics["num_samples"] == 1


def test_absent_class_is_left_out_of_the_mean_but_a_missed_class_counts_as_zero():
    truth = np.array([[0, 0, 1, 1]])
    pred = np.array([[0, 0, 0, 0]])
    # class 0: TP 2, FP 2 -> 0.5; class 1: in the truth, never predicted -> 0; class 2 absent -> None
    metrics = metrics_from_confusion(confusion_matrix(truth, pred, 3), num_samples=1)
    assert metrics["per_class_iou"] == [0.5, 0.0, None]
    assert metrics["mean_iou"] == pytest.approx(0.25)
    # A class predicted but not in the truth is a false positive: IoU 0 and in the mean.
    metrics = metrics_from_confusion(confusion_matrix(truth, np.array([[0, 0, 1, 2]]), 3), num_samples=1)
    assert metrics["per_class_iou"] == [1.0, 0.5, 0.0]
    assert metrics["mean_iou"] == pytest.approx(0.5)


def test_only_ignore_pixels_give_null_metrics_in_valid_json():
    matrix = confusion_matrix(np.full((2, 2), 255), np.zeros((2, 2)), num_classes=3)
    assert matrix.sum() == 0
    assert np.isnan(per_class_iou(matrix)).all()
    metrics = metrics_from_confusion(matrix, num_samples=1)
    assert metrics["mean_iou"] is None and metrics["pixel_accuracy"] is None
    text = json.dumps(metrics, allow_nan=False)  # strict JSON: no NaN tokens
    assert json.loads(text)["per_class_iou"] == [None, None, None]
    assert "n/a" in format_metrics(metrics)


def test_accumulating_confusion_matrices_equals_one_matrix_of_all_pixels():
    rng = np.random.default_rng(0)
    truths = [rng.integers(0, 4, size=(5, 7)) for _ in range(3)]
    preds = [rng.integers(0, 4, size=(5, 7)) for _ in range(3)]
    truths[1][0, :] = 255
    summed = sum(confusion_matrix(t, p, 4) for t, p in zip(truths, preds))
    together = confusion_matrix(np.concatenate([t.ravel() for t in truths]),
                                np.concatenate([p.ravel() for p in preds]), 4)
    np.testing.assert_array_equal(summed, together)
    metrics = metrics_from_confusion(summed, num_samples=3)
    assert set(metrics) >= {"mean_iou", "pixel_accuracy", "per_class_iou", "num_samples"}
    assert isinstance(metrics["mean_iou"], float) and not math.isnan(metrics["mean_iou"])


def test_upsampled_label_map_has_the_requested_size_and_follows_the_logits():
    logits = np.zeros((2, 2, 3), np.float32)
    logits[0, 0, 1] = logits[0, 1, 1] = 5.0  # top row: class 1
    logits[1, :, 2] = 5.0                    # bottom row: class 2
    label_map = upsampled_label_map(logits, (5, 3))
    assert label_map.shape == (5, 3) and label_map.dtype == np.uint8
    assert (label_map[0] == 1).all() and (label_map[-1] == 2).all()

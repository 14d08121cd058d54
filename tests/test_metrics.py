"""Classification metrics through simclr_tf.evaluation.metrics, checked against hand-computed values."""
import json

import numpy as np
import pytest

from simclr_tf.evaluation.metrics import classification_metrics, format_metrics_table

# 3 classes, 8 samples. Confusion matrix (rows true, columns predicted), counted by hand:
#   true 0: predicted 0, 0, 1      -> [2, 1, 0]
#   true 1: predicted 1, 1, 2      -> [0, 2, 1]
#   true 2: predicted 0, 2         -> [1, 0, 1]
Y_TRUE = [0, 0, 0, 1, 1, 1, 2, 2]
Y_PRED = [0, 0, 1, 1, 1, 2, 0, 2]


def test_small_case_matches_hand_computed_values():
    metrics = classification_metrics(Y_TRUE, Y_PRED, num_classes=3, class_names=["cat", "dog", "fox"])
    assert metrics["confusion_matrix"] == [[2, 1, 0], [0, 2, 1], [1, 0, 1]]
    assert metrics["accuracy"] == pytest.approx(5 / 8)
    assert metrics["num_samples"] == 8
    assert list(metrics["per_class"]) == ["cat", "dog", "fox"]
    # precision = correct / predicted as the class (column sum), recall = correct / support (row sum)
    expected = {"cat": (2 / 3, 2 / 3, 3), "dog": (2 / 3, 2 / 3, 3), "fox": (1 / 2, 1 / 2, 2)}
    for name, (precision, recall, support) in expected.items():
        row = metrics["per_class"][name]
        assert row["precision"] == pytest.approx(precision)
        assert row["recall"] == pytest.approx(recall)
        assert row["f1"] == pytest.approx(2 * precision * recall / (precision + recall))
        assert row["support"] == support
    json.dumps(metrics)  # plain JSON types only (it becomes metrics.json)


def test_unequal_precision_and_recall_and_a_class_never_predicted():
    # true:      0 0 0 0 1 2
    # predicted: 0 0 1 1 1 1  -> class 1: precision 1/4, recall 1/1; class 2 never predicted.
    metrics = classification_metrics([0, 0, 0, 0, 1, 2], [0, 0, 1, 1, 1, 1], num_classes=3)
    one, two = metrics["per_class"]["1"], metrics["per_class"]["2"]
    assert one["precision"] == pytest.approx(0.25) and one["recall"] == pytest.approx(1.0)
    assert one["f1"] == pytest.approx(2 * 0.25 / 1.25)
    assert two == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}
    assert metrics["per_class"]["0"]["precision"] == pytest.approx(1.0)
    assert metrics["per_class"]["0"]["recall"] == pytest.approx(0.5)
    assert metrics["class_names"] == ["0", "1", "2"]


def test_a_class_absent_from_the_data_still_gets_a_row_and_a_matrix_line():
    metrics = classification_metrics([0, 1, 1], [0, 1, 0], num_classes=4)
    assert np.asarray(metrics["confusion_matrix"]).shape == (4, 4)
    assert metrics["per_class"]["3"]["support"] == 0
    assert np.asarray(metrics["confusion_matrix"]).sum() == 3


def test_table_lists_every_class_and_the_accuracy():
    metrics = classification_metrics(Y_TRUE, Y_PRED, num_classes=3, class_names=["cat", "dog", "fox"])
    table = format_metrics_table(metrics)
    lines = table.splitlines()
    assert lines[0].split() == ["class", "precision", "recall", "f1", "support"]
    assert lines[3].split() == ["fox", "0.500", "0.500", "0.500", "2"]
    assert "accuracy 0.6250 on 8 images" in table


def test_wrong_number_of_names_is_refused():
    with pytest.raises(ValueError):
        classification_metrics([0, 1], [0, 1], num_classes=3, class_names=["a", "b"])

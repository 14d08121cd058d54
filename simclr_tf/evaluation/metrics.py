"""Classification metrics (scikit-learn) in the metrics.json layout (README, "What a run writes"), and their table."""
import numpy as np
from sklearn import metrics as skm


def default_class_names(num_classes):
    """'0', '1', ...: the names used when the user gave none."""
    return [str(i) for i in range(num_classes)]


def classification_metrics(y_true, y_pred, num_classes, class_names=None):
    """The metrics.json dict for integer labels and predictions in [0, num_classes).

    {"accuracy", "num_samples", "per_class": {name: {"precision", "recall", "f1", "support"}},
     "confusion_matrix": rows = true class, columns = predicted class, "class_names": names in
     matrix order}. A class that is never predicted (or never present) gets precision (recall)
    0 rather than a warning, as scikit-learn's zero_division=0.
    """
    y_true = np.asarray(y_true, np.int64)
    y_pred = np.asarray(y_pred, np.int64)
    names = list(class_names) if class_names else default_class_names(num_classes)
    if len(names) != num_classes:
        raise ValueError(f"{len(names)} class names for {num_classes} classes")
    classes = list(range(num_classes))
    precision, recall, f1, support = skm.precision_recall_fscore_support(
        y_true, y_pred, labels=classes, zero_division=0)
    per_class = {name: {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
                 for name, p, r, f, s in zip(names, precision, recall, f1, support)}
    matrix = skm.confusion_matrix(y_true, y_pred, labels=classes) if len(y_true) else np.zeros(
        (num_classes, num_classes), np.int64)
    return {
        "accuracy": float(skm.accuracy_score(y_true, y_pred)) if len(y_true) else 0.0,
        "num_samples": int(len(y_true)),
        "per_class": per_class,
        "confusion_matrix": matrix.astype(int).tolist(),
        "class_names": names,
    }


def format_metrics_table(metrics):
    """The per-class precision / recall / F1 / support table printed after an evaluation."""
    names = list(metrics["per_class"])
    width = max([len("class")] + [len(n) for n in names])
    lines = [f"{'class':<{width}}  precision  recall     f1  support"]
    for name in names:
        row = metrics["per_class"][name]
        lines.append(f"{name:<{width}}  {row['precision']:9.3f}  {row['recall']:6.3f}  {row['f1']:5.3f}"
                     f"  {row['support']:7d}")
    macro_f1 = np.mean([metrics["per_class"][n]["f1"] for n in names]) if names else 0.0
    lines.append(f"accuracy {metrics['accuracy']:.4f} on {metrics['num_samples']} images; macro F1 {macro_f1:.4f}")
    return "\n".join(lines)

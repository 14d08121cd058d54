"""Writes the demo's results into README.md and copies its figures to media/ (run by scripts/demo.sh).

Every number in the README's results section comes from the files the demo run wrote.
"""
import argparse
import csv
import json
import os
import shutil
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from flag_table import replace_section  # noqa: E402

FIGURES = {  # results file -> media name
    "pretrain/loss.png": "pretrain_loss.png",
    "pretrain/augmentations.png": "augmentations.png",
    "pretrain/linear_eval.png": "linear_eval_pretrained.png",
    "random_init/linear_eval.png": "linear_eval_random_init.png",
    "embed/tsne.png": "tsne.png",
    "classification_pretrain/confusion_matrix.png": "confusion_matrix.png",
    "segmentation_pretrain/predictions.png": "segmentation_predictions.png",
}


def _json(path):
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _history(path):
    if not os.path.isfile(path):
        return []
    with open(path, encoding="utf-8") as f:
        return list(csv.DictReader(f))


def pretraining_lines(results):
    rows = _history(os.path.join(results, "pretrain", "history.csv"))
    if not rows:
        return []
    first, last = rows[0], rows[-1]
    knn = [r for r in rows if r.get("knn_accuracy")]
    speed = sum(float(r["images_per_second"]) for r in rows[1:] or rows) / max(len(rows) - 1, 1)
    lines = [f"Pretraining: {len(rows)} epochs, loss {float(first['loss']):.3f} -> {float(last['loss']):.3f}, "
             f"contrastive accuracy {100 * float(first['contrastive_accuracy']):.1f}% -> "
             f"{100 * float(last['contrastive_accuracy']):.1f}%, {speed:.1f} images/s after the first epoch, "
             f"{sum(float(r['seconds']) for r in rows) / 60:.1f} minutes in all."]
    if knn:
        lines.append("kNN monitor (validation accuracy): " + ", ".join(
            f"epoch {r['epoch']}: {100 * float(r['knn_accuracy']):.1f}%" for r in knn) + ".")
    return lines


def linear_eval_table(results):
    pretrained = _json(os.path.join(results, "pretrain", "linear_eval.json"))
    random_init = _json(os.path.join(results, "random_init", "linear_eval.json"))
    if not pretrained or not random_init:
        return []
    lines = ["| labels used | train images | random-init encoder | SimCLR-pretrained encoder | gain |",
             "|---|---|---|---|---|"]
    baseline = {r["fraction"]: r for r in random_init["results"]}
    for r in pretrained["results"]:
        b = baseline.get(r["fraction"])
        if b is None:
            continue
        lines.append(f"| {100 * r['fraction']:g}% | {r['num_train']} | {_pct(b)} | {_pct(r)} | "
                     f"{100 * (r['accuracy_mean'] - b['accuracy_mean']):+.1f} points |")
    return [f"Linear evaluation (logistic regression on standardised `{pretrained['feature_layer']}` features, "
            f"{pretrained['val_images']} validation images, {pretrained['num_classes']} classes, mean +- std over "
            f"{pretrained['repeats']} subsets per fraction below 100%):", ""] + lines


def _pct(result):
    return f"{100 * result['accuracy_mean']:.1f} +- {100 * result['accuracy_std']:.1f}%"


def finetune_lines(results):
    lines = []
    accuracies = _by_encoder(results, "classification", "metrics.json")
    if accuracies:
        info = _json(os.path.join(results, "classification_pretrain", "finetune.json")) or {}
        trained_on = (f" on {info['num_train_images']} labelled images ({100 * info['train_fraction']:g}% of the "
                      f"training list)" if "num_train_images" in info else "")
        lines += [f"Classification: the whole network fine-tuned{trained_on}, validation accuracy on "
                  f"{accuracies['pretrain']['num_samples']} images:", "",
                  "| classification encoder | validation accuracy |", "|---|---|"]
        lines += [f"| {label} | {100 * accuracies[name]['accuracy']:.1f}% |" for name, label in _ENCODERS]
    ious = _by_encoder(results, "segmentation", "metrics.json")
    if ious:
        lines += ["", "| segmentation encoder | mean IoU | pixel accuracy |", "|---|---|---|"]
        lines += [f"| {label} | {100 * ious[name]['mean_iou']:.1f}% | {100 * ious[name]['pixel_accuracy']:.1f}% |"
                  for name, label in _ENCODERS]
    return lines


_ENCODERS = (("random_init", "random init"), ("pretrain", "SimCLR-pretrained"))


def _by_encoder(results, task, name):
    """{encoder: json} of `<task>_<encoder>/<name>` for both encoders, or {} when one is missing."""
    found = {encoder: _json(os.path.join(results, f"{task}_{encoder}", name)) for encoder, _ in _ENCODERS}
    return found if all(found.values()) else {}


def copy_figures(results, media):
    os.makedirs(media, exist_ok=True)
    copied = []
    for source, name in FIGURES.items():
        path = os.path.join(results, source)
        if os.path.isfile(path):
            shutil.copyfile(path, os.path.join(media, name))
            copied.append(name)
    return copied


def figure_lines(copied, media):
    captions = {"pretrain_loss.png": "Pretraining loss and contrastive accuracy",
                "augmentations.png": "Augmented pairs",
                "linear_eval_pretrained.png": "Linear evaluation, pretrained encoder",
                "linear_eval_random_init.png": "Linear evaluation, random-init encoder",
                "tsne.png": "t-SNE of h and z (validation images)",
                "confusion_matrix.png": "Confusion matrix after fine-tuning",
                "segmentation_predictions.png": "Segmentation: true and predicted masks"}
    return [f"![{captions[name]}]({media}/{name})" for name in copied]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", default="logs/demo")
    parser.add_argument("--media", default="media")
    parser.add_argument("--readme", default="README.md")
    args = parser.parse_args()
    copied = copy_figures(args.results, args.media)
    probe = _json(os.path.join(args.results, "pretrain", "linear_eval.json")) or {}
    sizes = (f"{probe['train_images']} training and {probe['val_images']} validation images of "
             f"{probe['num_classes']} shape classes" if probe else "shapes of four classes")
    body = [f"Made by `bash scripts/demo.sh` on this project's own demo data ({sizes}); the numbers below are "
            "read from the files that run wrote.", ""]
    for part in (pretraining_lines(args.results), linear_eval_table(args.results), finetune_lines(args.results),
                 figure_lines(copied, args.media)):
        if part:
            body += part + [""]
    with open(args.readme, encoding="utf-8") as f:
        text = f.read()
    temporary = args.readme + ".tmp"
    with open(temporary, "w", encoding="utf-8") as f:
        f.write(replace_section(text, "demo-results", "\n".join(body).rstrip()))
    os.replace(temporary, args.readme)
    print("\n".join(body))


if __name__ == "__main__":
    main()

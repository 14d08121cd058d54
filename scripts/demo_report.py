"""Writes the demo's report: report.md in the results folder (run by scripts/demo.sh), or README.md's results section.

`python scripts/demo_report.py --results logs/demo` writes `logs/demo/report.md` (tables and figures,
the images linked relative to it) and touches nothing else: a user's checkout stays as it was.
`--update_readme` is the maintainers' step: it copies the figures to `--media` (media/) and rewrites
the section between the `demo-results` markers of `--readme` (README.md) with the same text.
Every number comes from the files the demo run wrote.
"""
import argparse
import csv
import json
import os
import shutil
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from flag_table import replace_section  # noqa: E402

FIGURES = {  # results file -> (media name, caption)
    "pretrain/loss.png": ("pretrain_loss.png", "Pretraining loss and contrastive accuracy"),
    "pretrain/augmentations.png": ("augmentations.png", "Augmented pairs"),
    "pretrain/linear_eval.png": ("linear_eval_pretrained.png", "Linear evaluation, pretrained encoder"),
    "random_init/linear_eval.png": ("linear_eval_random_init.png", "Linear evaluation, random-init encoder"),
    "embed/tsne.png": ("tsne.png", "t-SNE of h and z (validation images)"),
    "classification_pretrain/confusion_matrix.png": ("confusion_matrix.png", "Confusion matrix after fine-tuning"),
    "segmentation_pretrain/predictions.png": ("segmentation_predictions.png", "Segmentation: true and predicted masks"),
}
REPORT_FILE = "report.md"


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


def existing_figures(results):
    """The FIGURES entries whose file the run wrote, in FIGURES order."""
    return [source for source in FIGURES if os.path.isfile(os.path.join(results, source))]


def copy_figures(results, media):
    """Copies the run's figures into `media` under their media names; returns the links (media/NAME)."""
    os.makedirs(media, exist_ok=True)
    links = []
    for source in existing_figures(results):
        name = FIGURES[source][0]
        shutil.copyfile(os.path.join(results, source), os.path.join(media, name))
        links.append((source, f"{media}/{name}"))
    return links


def figure_lines(links):
    """Markdown images of (results file, link) pairs."""
    return [f"![{FIGURES[source][1]}]({link})" for source, link in links]


def report_text(results, links):
    """The report's Markdown (without a title): what README.md's results section holds."""
    probe = _json(os.path.join(results, "pretrain", "linear_eval.json")) or {}
    sizes = (f"{probe['train_images']} training and {probe['val_images']} validation images of "
             f"{probe['num_classes']} shape classes" if probe else "shapes of four classes")
    body = [f"Made by `bash scripts/demo.sh` on this project's own demo data ({sizes}); the numbers below are "
            "read from the files that run wrote.", ""]
    for part in (pretraining_lines(results), linear_eval_table(results), finetune_lines(results),
                 figure_lines(links)):
        if part:
            body += part + [""]
    return "\n".join(body).rstrip() + "\n"


def _write_atomic(path, text):
    """`text` into `path` through a temporary file and a rename (never half a file)."""
    temporary = path + ".tmp"
    with open(temporary, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(temporary, path)


def write_report(results):
    """report.md in `results`, its images linked relative to it (the run's own files); returns its path."""
    text = report_text(results, [(source, source) for source in existing_figures(results)])
    path = os.path.join(results, REPORT_FILE)
    _write_atomic(path, "# simclr-tf demo results\n\n" + text)
    return path


def update_readme(results, media, readme):
    """The maintainers' step: figures copied to `media`, README's demo-results section rewritten."""
    text = report_text(results, copy_figures(results, media))
    with open(readme, encoding="utf-8") as f:
        current = f.read()
    if "<!-- demo-results:start -->" not in current:
        sys.exit(f"{readme} has no <!-- demo-results:start --> ... <!-- demo-results:end --> section")
    _write_atomic(readme, replace_section(current, "demo-results", text.rstrip()))
    return text


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", default="logs/demo", help="the demo's output folder (DEMO_OUT)")
    parser.add_argument("--update_readme", action="store_true",
                        help="maintainers: copy the figures to --media and rewrite --readme's results section")
    parser.add_argument("--media", default="media", help="with --update_readme: where the figures go")
    parser.add_argument("--readme", default="README.md", help="with --update_readme: the README to rewrite")
    args = parser.parse_args()
    if not os.path.isdir(args.results):
        sys.exit(f"--results={args.results}: no such folder (run bash scripts/demo.sh first)")
    if args.update_readme:
        print(update_readme(args.results, args.media, args.readme), end="")
        print(f"Rewrote the demo-results section of {args.readme} and the figures in {args.media}/")
        return
    path = write_report(args.results)
    with open(path, encoding="utf-8") as f:
        print(f.read(), end="")
    print(f"\nThe demo's report: {path} (README.md and media/ are left as they are; maintainers update them with "
          f"python scripts/demo_report.py --results {args.results} --update_readme)")


if __name__ == "__main__":
    main()

"""benchmarks/experiment_tables.py end to end at the tiniest scale: every table holds the rows it should
with the numbers of the run files, the by-layer figure is the run's own, --write_readme replaces only its
section, and a rerun skips every finished run."""
import json
import os
import subprocess
import sys

import pytest

from conftest import REPO, load_script

SCRIPT = os.path.join(REPO, "benchmarks", "experiment_tables.py")


def _json(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _row(text, first_cells):
    """The cells of the one Markdown table row of `text` that starts with `first_cells`."""
    rows = [line for line in text.splitlines() if line.startswith("| " + " | ".join(first_cells) + " |")]
    assert len(rows) == 1, (first_cells, text)
    return [cell.strip() for cell in rows[0].strip("|").split("|")]


def _table(text, title):
    """The part of tables.md from the table titled `title` up to the next title."""
    start = text.index(f"**{title}")
    end = text.find("\n**", start + 1)
    return text[start:end if end > 0 else len(text)]


def _pct(accuracy):
    return f"{100 * accuracy:.1f} +- 0.0%"


def test_fine_tuning_epochs_grow_as_the_labels_shrink():
    tables = load_script("benchmarks/experiment_tables.py")
    assert [tables.finetune_epochs(f, 3) for f in (1.0, 0.2, 0.1, 0.05)] == [3, 7, 9, 13]
    assert tables.finetune_epochs(1.0, 1) == 1


@pytest.mark.slow
def test_tiny_run_fills_every_table_from_the_run_files_and_resumes(demo_data, tmp_path):
    data = os.path.dirname(demo_data.train)
    work = tmp_path / "work"
    readme = tmp_path / "README.md"
    readme.write_text("# title\n<!-- experiment-tables:start -->\nold\n<!-- experiment-tables:end -->\nafter\n",
                      encoding="utf-8")
    command = [sys.executable, SCRIPT, "--data", data, "--work", str(work), "--repeats", "1", "--fractions", "1.0",
               "--scratch_fractions", "1.0", "--pretrain_epochs", "1", "--pretrain_batch", "16",
               "--finetune_epochs", "1", "--finetune_batch", "16", "--autoencoder_epochs", "1", "--num_clusters", "8",
               "--write_readme", str(readme)]
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="-1")
    first = subprocess.run(command, capture_output=True, text=True, timeout=900, cwd=REPO, env=env)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    text = (work / "tables.md").read_text(encoding="utf-8")
    runs = work / "runs"

    # (a) probes from linear_eval.json, fine-tuned accuracies from metrics.json (100% is run once,
    # shared with table (c)).
    probe = {name: _json(runs / name / "linear_eval.json") for name in ("pretrain_simclr", "random_init",
                                                                          "pretrain_guided")}
    tuned = {e: _json(runs / f"finetune_{e}_f1_s0" / "metrics.json")["accuracy"] for e in ("random_init", "simclr")}
    assert _row(_table(text, "Linear probe and fine-tuning"), ["100%", "32"]) == [
        "100%", "32", _pct(probe["random_init"]["results"][0]["accuracies"][0]),
        _pct(probe["pretrain_simclr"]["results"][0]["accuracies"][0]), _pct(tuned["random_init"]),
        _pct(tuned["simclr"])]
    # (b) one row per layer of the one --feature_layer=all run, and its figure copied unchanged.
    by_layer = probe["pretrain_simclr"]["by_layer"]
    assert list(by_layer) == ["h", "proj1", "proj2"]
    for layer, entry in by_layer.items():
        name = "h (encoder output)" if layer == "h" else layer
        assert _row(_table(text, "Linear probe by feature layer"), [name]) == [
            name, str(entry["feature_dim"]), _pct(entry["results"][0]["accuracies"][0])]
    figure = (runs / "pretrain_simclr" / "linear_eval_layers.png").read_bytes()
    assert (work / "linear_eval_layers.png").read_bytes() == figure
    assert "![Linear probe accuracy by feature layer](linear_eval_layers.png)" in text
    # (c) the same 100% fine-tuning runs, with the gain.
    gain = f"{100 * (tuned['simclr'] - tuned['random_init']):+.1f} points"
    assert _row(_table(text, "Supervised from scratch"), ["100%", "32"]) == [
        "100%", "32", _pct(tuned["random_init"]), _pct(tuned["simclr"]), gain]
    # (d) the guided run used the pseudo-labels, and its probe is in the table.
    assert (runs / "pseudo_labels" / "pseudo_labels.txt").is_file()
    flags = (runs / "pretrain_guided" / "flags.txt").read_text(encoding="utf-8")
    assert "--pseudo_label_file=" in flags
    vanilla, guided = (probe[n]["results"][0]["accuracies"][0] for n in ("pretrain_simclr", "pretrain_guided"))
    assert _row(_table(text, "Vanilla versus G-SimCLR"), ["100%", "32"]) == [
        "100%", "32", _pct(vanilla), _pct(guided), f"{100 * (guided - vanilla):+.1f} points"]

    saved = _json(work / "tables.json")
    assert saved["results"]["finetune"]["simclr"]["1"]["accuracies"] == [tuned["simclr"]]
    assert all(seconds > 0 for seconds in saved["run_seconds"].values())
    new_readme = readme.read_text(encoding="utf-8")
    assert new_readme.startswith("# title\n<!-- experiment-tables:start -->\nMade by `python benchmarks/")
    assert new_readme.endswith("<!-- experiment-tables:end -->\nafter\n") and "\nold\n" not in new_readme
    assert "](media/experiment_linear_eval_layers.png)" in new_readme
    assert (tmp_path / "media" / "experiment_linear_eval_layers.png").read_bytes() == figure

    # A rerun starts no run and writes the same tables.
    again = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=REPO, env=env)
    assert again.returncode == 0, again.stderr[-3000:]
    progress = [line for line in again.stdout.splitlines() if line.startswith("[")]
    assert len(progress) == 8 and all(line.endswith("done before, skipped") for line in progress), again.stdout
    assert (work / "tables.md").read_text(encoding="utf-8") == text

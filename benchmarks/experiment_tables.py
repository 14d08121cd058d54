"""The experiment tables of earlier SimCLR projects, reproduced at small scale on the demo data.

    python benchmarks/experiment_tables.py --data DATA_DIR --work WORK_DIR
        [--tables fractions,layers,scratch,guided] [--num_train 2000 --num_val 200 --image_size 32]
        [--repeats 2] [--pretrain_epochs 10] [--finetune_epochs 3] [--write_readme README.md]

Tables (select with --tables; the default is all four):

* fractions: linear probe AND fine-tuned classifier at --fractions of the labels (default 100%, 20%
  and 5%), random-init versus SimCLR-pretrained encoder;
* layers: linear probe accuracy by feature layer (h and every projection-head layer) from ONE
  `linear_eval --feature_layer=all` run, with the figure that run drew;
* scratch: supervised training from scratch (random init, whole network trained) versus SimCLR
  pretraining + fine-tuning at --scratch_fractions (default 10% and 100%);
* guided: vanilla SimCLR versus G-SimCLR guided batches (`--task=pseudo_labels`, then the same
  pretraining with `--pseudo_label_file`), compared by linear probe.

Every number comes from a `python main.py` subprocess, each in its own run folder under
WORK_DIR/runs; a run whose result file exists is skipped, so an interrupted script resumes where it
stopped (a half-finished pretraining resumes from its checkpoint, as the CLI does). WORK_DIR/runs.json
records each run's flags and wall time; finished runs recorded with other flags (another budget in the
same work folder) stop the script rather than feed stale numbers into the tables. The fine-tuning
runs the tables share (100% in both "fractions" and "scratch") are run once. If --data holds no
train.txt, the demo data is generated there first (`python -m simclr_tf.data.demo`).

Writes WORK_DIR/tables.md, WORK_DIR/tables.json (every accuracy, the settings and each run's wall
time) and a copy of the by-layer figure; --write_readme README.md replaces the text between
<!-- experiment-tables:start --> and <!-- experiment-tables:end --> and copies the figure to the
README's media/ folder. Run it under `nice` on a shared machine: it uses every core it is given.
"""
import argparse
import csv
import json
import math
import os
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
MAIN = os.path.join(REPO, "main.py")
sys.path.insert(0, os.path.join(REPO, "scripts"))

from flag_table import replace_section  # noqa: E402  (the README marker replacement the other scripts use)

README_SECTION = "experiment-tables"
TABLES = ("fractions", "layers", "scratch", "guided")
ENCODERS = (("random_init", "random init"), ("simclr", "SimCLR"))
LAYERS_FIGURE = "linear_eval_layers.png"
README_FIGURE = "experiment_linear_eval_layers.png"


# --- settings ---------------------------------------------------------------------------------------------

def parse_fractions(text, option):
    """Label fractions from "1.0 0.2 0.05" (spaces or commas), each in (0, 1]."""
    try:
        values = [float(v) for v in text.replace(",", " ").split()]
    except ValueError:
        raise SystemExit(f"{option}={text!r}: expected numbers in (0, 1]") from None
    if not values or any(not 0 < v <= 1 for v in values):
        raise SystemExit(f"{option}={text!r}: expected numbers in (0, 1]")
    return values


def finetune_epochs(fraction, epochs_at_full):
    """Fine-tuning epochs at a label fraction: `epochs_at_full / sqrt(fraction)`, rounded.

    Fewer labels get more epochs (a fixed epoch count would give 5% of the labels 20x fewer steps,
    a fixed step count 20x more epochs, far past where a few hundred images stop helping); the
    square root is the middle ground, and it is the same rule for both encoders.
    """
    return max(1, round(epochs_at_full / math.sqrt(fraction)))


def probe_fractions(args):
    """Fractions of every linear_eval run: --fractions and --scratch_fractions together, largest first,
    whatever --tables selects (probes are cheap, and so a later selection reuses the same runs)."""
    return sorted(set(args.fractions) | set(args.scratch_fractions), reverse=True)


def finetune_fractions(args):
    """Fractions of the fine-tuning runs the selected tables need, largest first: a run both the
    fractions and the scratch table need is made once."""
    wanted = set(args.fractions) if "fractions" in args.tables else set()
    if "scratch" in args.tables:
        wanted.update(args.scratch_fractions)
    return sorted(wanted, reverse=True)


# --- the runs ---------------------------------------------------------------------------------------------

class Run:
    """One `main.py` invocation: its name, flags and the result file whose presence means it finished."""

    def __init__(self, name, flags, result, is_done=None):
        self.name, self.flags, self.result = name, flags, result
        self._is_done = is_done

    def done(self):
        """True when the result file exists (and, for probes, holds the fractions asked for)."""
        if not os.path.isfile(self.result):
            return False
        return self._is_done(self.result) if self._is_done else True


def _read_json(path):
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _probe_matches(fractions, repeats, layer):
    """A check that a linear_eval.json holds these fractions, repeats and layer (else it is rerun)."""
    def check(path):
        result = _read_json(path)
        return (result.get("feature_layer") == layer and result.get("repeats") == repeats
                and [r["fraction"] for r in result["results"]] == fractions)
    return check


def plan_runs(args, data):
    """The runs the selected tables need, in the order they are run (each folder appears once)."""
    runs_dir = os.path.join(args.work, "runs")
    folder = {name: os.path.join(runs_dir, name) for name in
              ("pretrain_simclr", "random_init", "pseudo_labels", "pretrain_guided")}
    common = [f"--input_size={args.image_size} {args.image_size}", "--small_stem=false", "--backbone=resnet18"]
    fractions = probe_fractions(args)
    fraction_text = " ".join(f"{f:g}" for f in fractions)
    unlabelled = os.path.join(data, "train_unlabeled.txt")
    labelled = [f"--train_file_path={os.path.join(data, 'train.txt')}",
                f"--val_file_path={os.path.join(data, 'val.txt')}"]
    # The demo's short-run SimCLR recipe (scripts/demo.sh), every optimiser setting explicit so that
    # the numbers do not move when the recipes' defaults do.
    pretrain = ["--task=pretrain", *common, f"--train_file_path={unlabelled}", f"--batch_size={args.pretrain_batch}",
                f"--num_epochs={args.pretrain_epochs}", "--optimizer=lars", "--learning_rate=0.1",
                "--lr_scaling=sqrt", "--weight_decay=1e-6", "--warmup_epochs=1", "--crop_area_min=0.3",
                "--strength=0.5", "--temperature=0.2", "--knn_every=0", "--diagnostics_every=0", "--cache",
                "--seed=0"]

    def probe(name, layer):
        return Run(f"linear_eval {name} ({layer})",
                   ["--task=linear_eval", *common, *labelled, f"--pretrain_save_path={folder[name]}",
                    f"--train_fractions={fraction_text}", f"--repeats={args.repeats}", f"--feature_layer={layer}",
                    "--seed=0"],
                   os.path.join(folder[name], "linear_eval.json"), _probe_matches(fractions, args.repeats, layer))

    runs = [Run("pretrain simclr", pretrain + [f"--pretrain_save_path={folder['pretrain_simclr']}"],
                os.path.join(folder["pretrain_simclr"], "encoder.keras")),
            # --feature_layer=all serves every table: its first layer (h) is the probe of
            # "fractions" and "guided", its by_layer the "layers" table.
            probe("pretrain_simclr", "all")]
    # G-SimCLR before the fine-tuning runs: with a deadline, every table then has numbers before the
    # many fine-tuning runs fill in the repeats.
    if "guided" in args.tables:
        labels_file = os.path.join(folder["pseudo_labels"], "pseudo_labels.txt")
        runs += [Run("pseudo_labels", ["--task=pseudo_labels", *common, f"--train_file_path={unlabelled}",
                                       f"--num_clusters={args.num_clusters}", f"--num_epochs={args.autoencoder_epochs}",
                                       "--batch_size=64", "--cache", "--seed=0",
                                       f"--output_path={folder['pseudo_labels']}"], labels_file),
                 Run("pretrain guided", pretrain + [f"--pseudo_label_file={labels_file}",
                                                    f"--pretrain_save_path={folder['pretrain_guided']}"],
                     os.path.join(folder["pretrain_guided"], "encoder.keras")),
                 probe("pretrain_guided", "h")]
    if "fractions" in args.tables:
        runs.append(probe("random_init", "h"))
    if {"fractions", "scratch"} & set(args.tables):
        classes = _num_classes(data)
        # Seeds outermost: every cell gets its first run before any gets its second.
        for seed in range(args.repeats):
            for fraction in finetune_fractions(args):
                for encoder, _ in ENCODERS:
                    pretrain_path = folder["pretrain_simclr" if encoder == "simclr" else "random_init"]
                    save = os.path.join(runs_dir, f"finetune_{encoder}_f{fraction:g}_s{seed}")
                    runs.append(Run(
                        f"classification {encoder} {fraction:g} seed {seed}",
                        ["--task=classification", *common, *labelled, f"--num_classes={classes}",
                         f"--train_fraction={fraction:g}", f"--seed={seed}",
                         f"--num_epochs={finetune_epochs(fraction, args.finetune_epochs)}",
                         f"--batch_size={args.finetune_batch}", "--optimizer=adam",
                         f"--learning_rate={args.finetune_lr:g}", "--weight_decay=0", "--warmup_epochs=0",
                         "--encoder_lr_multiplier=1.0", "--head=linear", "--freeze=false", "--crop_area_min=0.3",
                         "--cache", f"--pretrain_save_path={pretrain_path}", f"--finetune_save_path={save}"],
                        os.path.join(save, "metrics.json")))
    return runs, folder


def _num_classes(data):
    with open(os.path.join(data, "classes.txt"), encoding="utf-8") as f:
        return sum(1 for line in f if line.strip())


def execute(runs, work, ledger):
    """Runs every unfinished run in order (output in WORK/logs/), recording its flags and wall time in
    `ledger` ({name: {"flags", "seconds"}}, kept in WORK/runs.json).

    A finished run recorded with other flags (another budget in the same work folder) stops the script
    before anything runs: its results would be stale, and the CLI refuses to overwrite them anyway.
    """
    stale = [run.name for run in runs if run.done() and ledger.get(run.name, {}).get("flags", run.flags) != run.flags]
    if stale:
        raise SystemExit(f"{work} holds finished runs made with other settings ({', '.join(stale)}): choose another "
                         "--work folder (or delete those run folders) to run with these.")
    logs = os.path.join(work, "logs")
    os.makedirs(logs, exist_ok=True)
    env = dict(os.environ)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    for number, run in enumerate(runs, 1):
        prefix = f"[{number}/{len(runs)}] {run.name}"
        if run.done():
            ledger.setdefault(run.name, {"flags": run.flags, "seconds": None})
            print(f"{prefix}: done before, skipped", flush=True)
            continue
        log_path = os.path.join(logs, run.name.replace(" ", "_").replace("(", "").replace(")", "") + ".log")
        start = time.time()
        with open(log_path, "w", encoding="utf-8") as log:
            log.write("python main.py " + shlex.join(run.flags) + "\n\n")
            log.flush()
            status = subprocess.run([sys.executable, MAIN, *run.flags], stdout=log, stderr=subprocess.STDOUT,
                                    cwd=REPO, env=env).returncode
        seconds = time.time() - start
        if status != 0 or not run.done():
            with open(log_path, encoding="utf-8") as f:
                tail = f.read()[-3000:]
            raise SystemExit(f"{prefix} failed (status {status}); log {log_path}:\n{tail}")
        ledger[run.name] = {"flags": run.flags, "seconds": round(seconds, 1)}
        print(f"{prefix}: {seconds:.0f} s", flush=True)


def ensure_data(args):
    """The data folder, generated with the demo generator when it holds no train.txt."""
    if not os.path.isfile(os.path.join(args.data, "train.txt")):
        print(f"generating the demo data in {args.data}", flush=True)
        subprocess.run([sys.executable, "-m", "simclr_tf.data.demo", args.data, "--num_train", str(args.num_train),
                        "--num_val", str(args.num_val), "--image_size", str(args.image_size)],
                       check=True, cwd=REPO, stdout=subprocess.DEVNULL)
    return _read_json(os.path.join(args.data, "params.json")) or {}


# --- reading the results ----------------------------------------------------------------------------------

def mean_std(values):
    """(mean, population standard deviation) of a list, the statistic linear_eval.json reports too."""
    return statistics.fmean(values), statistics.pstdev(values)


def _cell(values, expected=None):
    """"mean +- std%" of accuracies in [0, 1]; "n/a" when no run finished, and the count when fewer than
    the `expected` repeats did."""
    if not values:
        return "n/a"
    mean, std = mean_std(values)
    partial = f" ({len(values)} of {expected} runs)" if expected and len(values) < expected else ""
    return f"{100 * mean:.1f} +- {100 * std:.1f}%{partial}"


def probe_results(path, layer="h"):
    """{fraction: {"num_train", "accuracies"}} of one layer of a linear_eval.json ({} when missing)."""
    result = _read_json(path)
    if result is None:
        return {}
    rows = result["by_layer"][layer]["results"] if "by_layer" in result else result["results"]
    return {r["fraction"]: {"num_train": r["num_train"], "accuracies": r["accuracies"]} for r in rows}


def finetune_results(runs_dir, encoder, fraction, repeats):
    """{"num_train", "accuracies"} of the fine-tuning runs of one encoder and fraction (accuracies of the
    seeds that finished)."""
    accuracies, num_train = [], None
    for seed in range(repeats):
        save = os.path.join(runs_dir, f"finetune_{encoder}_f{fraction:g}_s{seed}")
        metrics = _read_json(os.path.join(save, "metrics.json"))
        if metrics is not None:
            accuracies.append(metrics["accuracy"])
            num_train = (_read_json(os.path.join(save, "finetune.json")) or {}).get("num_train_images", num_train)
    return {"num_train": num_train, "accuracies": accuracies}


def last_epoch(save_path):
    """The last row of a pretraining run's history.csv, or {}."""
    path = os.path.join(save_path, "history.csv")
    if not os.path.isfile(path):
        return {}
    with open(path, encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    return rows[-1] if rows else {}


def collect(args, folder):
    """Every number the tables show, read from the run folders."""
    runs_dir = os.path.join(args.work, "runs")
    simclr_probe = os.path.join(folder["pretrain_simclr"], "linear_eval.json")
    results = {"probe": {"simclr": probe_results(simclr_probe),
                         "random_init": probe_results(os.path.join(folder["random_init"], "linear_eval.json")),
                         "guided": probe_results(os.path.join(folder["pretrain_guided"], "linear_eval.json"))},
               "finetune": {encoder: {f"{f:g}": finetune_results(runs_dir, encoder, f, args.repeats)
                                      for f in finetune_fractions(args)} for encoder, _ in ENCODERS},
               "layers": {}, "pretraining": {}}
    probe = _read_json(simclr_probe) or {}
    for layer, entry in probe.get("by_layer", {}).items():
        results["layers"][layer] = {"feature_dim": entry["feature_dim"],
                                    **{f"{r['fraction']:g}": r["accuracies"] for r in entry["results"]}}
    for name in ("pretrain_simclr", "pretrain_guided"):
        results["pretraining"][name] = last_epoch(folder[name])
    return results


# --- the tables -------------------------------------------------------------------------------------------

def _pct(fraction):
    return f"{100 * fraction:g}%"


def _num_train(*entries):
    return next((str(e["num_train"]) for e in entries if e and e.get("num_train")), "n/a")


def fractions_table(args, results):
    """Table (a): linear probe and fine-tuning, random init versus SimCLR, by label fraction."""
    lines = ["| labels | train images | linear probe, random init | linear probe, SimCLR | "
             "fine-tuned, random init | fine-tuned, SimCLR |", "|---|---|---|---|---|---|"]
    for f in args.fractions:
        probes = [results["probe"][e].get(f, {}) for e in ("random_init", "simclr")]
        tuned = [results["finetune"][e][f"{f:g}"] for e, _ in ENCODERS]
        cells = [_cell(p.get("accuracies")) for p in probes] + [_cell(t["accuracies"], args.repeats) for t in tuned]
        lines.append(f"| {_pct(f)} | {_num_train(*probes, *tuned)} | " + " | ".join(cells) + " |")
    return lines


def layers_table(args, results):
    """Table (b): linear probe accuracy of h and of every projection-head layer, by label fraction."""
    lines = ["| feature layer | features | " + " | ".join(f"{_pct(f)} of the labels" for f in args.fractions) + " |",
             "|---|---|" + "---|" * len(args.fractions)]
    for layer, entry in results["layers"].items():
        name = "h (encoder output)" if layer == "h" else layer
        lines.append(f"| {name} | {entry['feature_dim']} | "
                     + " | ".join(_cell(entry.get(f"{f:g}")) for f in args.fractions) + " |")
    return lines


def scratch_table(args, results):
    """Table (c): supervised from scratch versus SimCLR + fine-tuning, same fine-tuning flags."""
    lines = ["| labels | train images | supervised from scratch (random init) | SimCLR pretraining + fine-tuning "
             "| gain |", "|---|---|---|---|---|"]
    for f in sorted(args.scratch_fractions):
        scratch, tuned = (results["finetune"][e][f"{f:g}"] for e in ("random_init", "simclr"))
        gain = ("n/a" if not (scratch["accuracies"] and tuned["accuracies"]) else
                f"{100 * (mean_std(tuned['accuracies'])[0] - mean_std(scratch['accuracies'])[0]):+.1f} points")
        lines.append(f"| {_pct(f)} | {_num_train(scratch, tuned)} | {_cell(scratch['accuracies'], args.repeats)} | "
                     f"{_cell(tuned['accuracies'], args.repeats)} | {gain} |")
    return lines


def guided_table(args, results):
    """Table (d): linear probe of h after vanilla and after G-SimCLR guided pretraining (same budget)."""
    lines = ["| labels | train images | vanilla SimCLR | G-SimCLR guided batches | difference |",
             "|---|---|---|---|---|"]
    for f in args.fractions:
        vanilla, guided = results["probe"]["simclr"].get(f, {}), results["probe"]["guided"].get(f, {})
        diff = ("n/a" if not (vanilla and guided) else
                f"{100 * (mean_std(guided['accuracies'])[0] - mean_std(vanilla['accuracies'])[0]):+.1f} points")
        lines.append(f"| {_pct(f)} | {_num_train(vanilla, guided)} | {_cell(vanilla.get('accuracies'))} | "
                     f"{_cell(guided.get('accuracies'))} | {diff} |")
    epochs = [(name, results["pretraining"][key]) for name, key in
              (("vanilla", "pretrain_simclr"), ("guided", "pretrain_guided")) if results["pretraining"][key]]
    if epochs:
        lines += ["", "Last pretraining epoch: " + "; ".join(
            f"{name} loss {float(row['loss']):.3f}, "
            f"contrastive accuracy {100 * float(row['contrastive_accuracy']):.1f}%" for name, row in epochs) + "."]
    return lines


def _count(number, noun):
    return f"{number} {noun}{'' if number == 1 else 's'}"


def markdown(args, results, params, figure, command, minutes):
    """The Markdown of the selected tables, with the scale and the command that made them."""
    images = (f"{params.get('num_train', '?')} training and {params.get('num_val', '?')} validation images of "
              f"{params.get('image_size', args.image_size)} px, {len(params.get('classes', [])) or '?'} classes")
    seeds = _count(args.repeats, "repeat")
    guided = " (and once more with guided batches)" if "guided" in args.tables else ""
    epochs = ", ".join(f"{finetune_epochs(f, args.finetune_epochs)} at {_pct(f)}" for f in finetune_fractions(args))
    out = [f"Made by `{command}` on the demo data ({images}); every number is read from the run folders that "
           "command wrote. These are small-scale reproductions of the tables of earlier SimCLR projects, not paper "
           f"numbers: a ResNet-18 (ImageNet stem) pretrained once for {_count(args.pretrain_epochs, 'epoch')} of "
           f"batch {args.pretrain_batch}{guided}, {minutes:.0f} minutes of runs in all "
           f"on {os.cpu_count()} CPU cores.",
           "",
           f"Mean +- standard deviation over {seeds}: linear probes (logistic regression on standardised features of "
           "the one pretrained encoder) over that many stratified label subsets per fraction (100% is one fit, hence "
           "+- 0)" + ("; fine-tuned classifiers over that many seeds (label subset, head initialisation, data order). "
                      "Fine-tuning trains the whole network with the same flags for both encoders: Adam at "
                      f"{args.finetune_lr:g}, batch {args.finetune_batch}, crop-and-flip augmentation, E / "
                      f"sqrt(fraction) epochs ({epochs}), so that fewer labels get more epochs." if epochs else "."),
           ""]
    if "fractions" in args.tables:
        out += ["**Linear probe and fine-tuning by label fraction** (validation accuracy):", "",
                *fractions_table(args, results), ""]
    if "layers" in args.tables:
        out += ["**Linear probe by feature layer** (one `--task=linear_eval --feature_layer=all` run on the SimCLR "
                "encoder: h, then the output of each projection-head layer; the last is z):", "",
                *layers_table(args, results), ""]
        if figure:
            out += [f"![Linear probe accuracy by feature layer]({figure})", ""]
    if "scratch" in args.tables:
        shared = sorted(set(args.scratch_fractions) & set(args.fractions)) if "fractions" in args.tables else []
        note = (f"; the runs at {', '.join(_pct(f) for f in shared)} are those of the first table" if shared else "")
        out += ["**Supervised from scratch versus SimCLR + fine-tuning** (the whole network trained either way"
                f"{note}):",
                "", *scratch_table(args, results), ""]
    if "guided" in args.tables:
        batches = (f"no batch of {args.pretrain_batch} holds two images of one cluster"
                   if args.pretrain_batch <= args.num_clusters else
                   f"every batch of {args.pretrain_batch} spreads the clusters as evenly as it can")
        out += [f"**Vanilla versus G-SimCLR guided batches** (`--task=pseudo_labels`: a denoising autoencoder "
                f"({_count(args.autoencoder_epochs, 'epoch')}) and k-means into {args.num_clusters} clusters, then the "
                f"same pretraining with `--pseudo_label_file`, so {batches}; linear probe of h):", "",
                *guided_table(args, results), ""]
    return "\n".join(out).rstrip() + "\n"


# --- main -------------------------------------------------------------------------------------------------

def parse_args(argv=None):
    """The script's options (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="demo data folder (generated when it holds no train.txt)")
    parser.add_argument("--work", required=True, help="folder for the run folders, logs and tables")
    parser.add_argument("--tables", default=",".join(TABLES), help=f"comma-separated subset of {','.join(TABLES)}")
    parser.add_argument("--num_train", type=int, default=2000, help="demo data: training images (when generated)")
    parser.add_argument("--num_val", type=int, default=200, help="demo data: validation images (when generated)")
    parser.add_argument("--image_size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=2, help="label subsets / fine-tuning seeds per fraction")
    parser.add_argument("--fractions", default="1.0 0.2 0.05",
                        help="label fractions of the fractions, layers and guided tables")
    parser.add_argument("--scratch_fractions", default="0.1 1.0", help="label fractions of the scratch table")
    parser.add_argument("--pretrain_epochs", type=int, default=10)
    parser.add_argument("--pretrain_batch", type=int, default=128)
    parser.add_argument("--finetune_epochs", type=int, default=3, help="fine-tuning epochs at 100%% of the labels")
    parser.add_argument("--finetune_batch", type=int, default=32)
    parser.add_argument("--finetune_lr", type=float, default=3e-4, help="Adam learning rate of fine-tuning")
    parser.add_argument("--num_clusters", type=int, help="G-SimCLR k-means clusters (default: --pretrain_batch)")
    parser.add_argument("--autoencoder_epochs", type=int, default=10)
    parser.add_argument("--write_readme", metavar="README", help="replace this README's experiment-tables section")
    args = parser.parse_args(argv)
    args.tables = [t.strip() for t in args.tables.split(",") if t.strip()]
    unknown = sorted(set(args.tables) - set(TABLES))
    if unknown or not args.tables:
        parser.error(f"--tables: expected a comma-separated subset of {','.join(TABLES)}, got {unknown or 'nothing'}")
    args.fractions = parse_fractions(args.fractions, "--fractions")
    args.scratch_fractions = parse_fractions(args.scratch_fractions, "--scratch_fractions")
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    args.num_clusters = args.num_clusters or args.pretrain_batch
    args.data, args.work = os.path.abspath(args.data), os.path.abspath(args.work)
    return args


def main(argv=None):
    """Runs what the selected tables need (skipping finished runs) and writes tables.md / tables.json."""
    argv = sys.argv[1:] if argv is None else argv
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # runs the `finally` that keeps runs.json
    args = parse_args(argv)
    os.makedirs(args.work, exist_ok=True)
    params = ensure_data(args)
    runs, folder = plan_runs(args, args.data)
    ledger_path = os.path.join(args.work, "runs.json")
    ledger = _read_json(ledger_path) or {}
    try:
        execute(runs, args.work, ledger)
    finally:  # what finished is recorded even when a later run fails
        with open(ledger_path, "w", encoding="utf-8") as f:
            json.dump(ledger, f, indent=1)
    seconds = {run.name: ledger[run.name]["seconds"] for run in runs if run.name in ledger}
    minutes = sum(s or 0 for s in seconds.values()) / 60
    results = collect(args, folder)
    figure_source = os.path.join(folder["pretrain_simclr"], LAYERS_FIGURE)
    has_figure = "layers" in args.tables and os.path.isfile(figure_source)
    if has_figure:  # the figure the linear_eval run drew, copied, never redrawn
        shutil.copyfile(figure_source, os.path.join(args.work, LAYERS_FIGURE))
    command = "python benchmarks/experiment_tables.py " + shlex.join(argv)
    text = markdown(args, results, params, LAYERS_FIGURE if has_figure else None, command, minutes)
    with open(os.path.join(args.work, "tables.md"), "w", encoding="utf-8") as f:
        f.write(text)
    with open(os.path.join(args.work, "tables.json"), "w", encoding="utf-8") as f:
        json.dump({"command": command, "settings": {k: v for k, v in vars(args).items() if k != "write_readme"},
                   "data": params, "run_seconds": seconds,
                   "results": results}, f, indent=1)
    print(text)
    if args.write_readme:
        media = os.path.join(os.path.dirname(os.path.abspath(args.write_readme)), "media")
        if has_figure:
            os.makedirs(media, exist_ok=True)
            shutil.copyfile(figure_source, os.path.join(media, README_FIGURE))
        section = markdown(args, results, params, f"media/{README_FIGURE}" if has_figure else None, command, minutes)
        with open(args.write_readme, encoding="utf-8") as f:
            readme = f.read()
        if f"<!-- {README_SECTION}:start -->" not in readme or f"<!-- {README_SECTION}:end -->" not in readme:
            raise SystemExit(f"{args.write_readme} holds no <!-- {README_SECTION}:start/end --> markers")
        temporary = args.write_readme + ".tmp"
        with open(temporary, "w", encoding="utf-8") as f:
            f.write(replace_section(readme, README_SECTION, section.rstrip("\n")))
        os.replace(temporary, args.write_readme)
        print(f"rewrote the {README_SECTION} section of {args.write_readme}")


if __name__ == "__main__":
    main()

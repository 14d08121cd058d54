"""Recipe sweep: pretrain once per point of a grid of pretraining flags, probe each encoder, compare.

    python benchmarks/recipe_sweep.py --train_file_path=LIST --probe_train_file_path=TRAIN.txt \\
        --probe_val_file_path=VAL.txt --grid "temperature=0.1,0.2,0.5 strength=0.5,1.0" --num_epochs=10 \\
        [--out=logs/recipe_sweep] [--probe_fractions="1.0 0.1"] [--no_baseline] [--write_readme] \\
        [-- PASS-THROUGH main.py FLAGS, e.g. --input_size="32 32" --batch_size=64 --seed=0]

The grid is space-separated NAME=V1,V2,... items, NAME any main.py flag (with or without its dashes);
every combination of the values is one grid point, in the order given (the last name varies fastest).
Each point is its own `main.py --task=pretrain` run in OUT/<point>/ with --num_epochs and the
pass-through flags, run one after another in subprocesses, then probed with `main.py
--task=linear_eval` (logistic regression on h, --probe_fractions of the labelled training list, scored
on the validation list). A random-init encoder of the same flags is probed too, as the floor.

Resumable: OUT/sweep.json records every finished point with the exact commands it ran; a rerun of the
same sweep skips those, and a point whose pretraining was killed resumes from its last completed
epoch (main.py resumes a run folder by itself). A rerun with other flags for an existing point is
refused by main.py (status 2) unless `--overwrite` is passed through.

Writes OUT/sweep.json (every point's flags, commands, last-epoch loss and contrastive accuracy,
probe results and wall times), OUT/sweep.md (the Markdown table) and OUT/sweep.png (probe accuracy
per grid point); --write_readme also puts the table into the README between
<!-- recipe-sweep:start --> and <!-- recipe-sweep:end -->.
"""
import argparse
import csv
import datetime
import itertools
import json
import os
import re
import shlex
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, HERE)
sys.path.insert(0, REPO)

import pretrain_throughput  # noqa: E402  (the README-section writer and the machine description)

MAIN = os.path.join(REPO, "main.py")
README = os.path.join(REPO, "README.md")
MARKERS = ("<!-- recipe-sweep:start -->", "<!-- recipe-sweep:end -->")
RESULTS_FILE, TABLE_FILE, PLOT_FILE = "sweep.json", "sweep.md", "sweep.png"
BASELINE = "random_init"
# Flags the sweep sets itself for every run: a grid or a pass-through flag naming them would be ambiguous.
OWN_FLAGS = ("task", "train_file_path", "val_file_path", "pretrain_save_path", "num_epochs", "train_fractions")


# --- the grid ---------------------------------------------------------------------------------------------

def parse_grid(text, known_flags=None):
    """[(name, [values])] from "temperature=0.1,0.2 strength=0.5,1.0"; `known_flags` (names) checks them."""
    grid = []
    for item in text.split():
        name, sep, values = item.partition("=")
        name = name.lstrip("-")
        values = [v for v in values.split(",") if v != ""]
        if not sep or not name or not values:
            raise ValueError(f"grid item {item!r}: expected NAME=V1,V2,...")
        if name in OWN_FLAGS:
            raise ValueError(f"grid item {item!r}: --{name} is set by the sweep itself")
        if known_flags is not None and name not in known_flags:
            raise ValueError(f"grid item {item!r}: main.py has no flag --{name}")
        if any(name == other for other, _ in grid):
            raise ValueError(f"grid item {item!r}: --{name} is named twice")
        grid.append((name, values))
    if not grid:
        raise ValueError("the grid is empty: give NAME=V1,V2,... items")
    return grid


def grid_points(grid):
    """Every combination as an ordered {name: value}, the last name varying fastest."""
    names = [name for name, _ in grid]
    return [dict(zip(names, combo)) for combo in itertools.product(*(values for _, values in grid))]


def point_name(point):
    """A folder name for a grid point, e.g. temperature-0.1_strength-0.5."""
    return "_".join(f"{name}-{re.sub(r'[^A-Za-z0-9.+-]+', '-', value)}" for name, value in point.items())


def main_py_flags():
    """The names of every main.py flag (config.py defines them; importing it loads no TensorFlow)."""
    from absl import flags
    import config
    return {f.name for f in flags.FLAGS.get_flags_for_module(config)} | {"flagfile"}


# --- the runs ---------------------------------------------------------------------------------------------

def pretrain_command(args, point, folder):
    """main.py arguments of one grid point's pretraining (the grid values come last, so they win)."""
    return (["--task=pretrain", f"--train_file_path={args.train_file_path}", f"--num_epochs={args.num_epochs}",
             f"--pretrain_save_path={folder}"] + args.passthrough
            + [f"--{name}={value}" for name, value in point.items()])


def probe_command(args, point, folder):
    """main.py arguments of the linear probe of the encoder in `folder` (random init when it has none).

    The point's flags are passed too: architecture flags (--backbone, --small_stem, ...) must match the
    loaded encoder, and linear_eval only warns about the pretraining flags it does not read.
    """
    return (["--task=linear_eval", f"--train_file_path={args.probe_train_file_path}",
             f"--val_file_path={args.probe_val_file_path}", f"--pretrain_save_path={folder}",
             f"--train_fractions={args.probe_fractions}"] + args.passthrough
            + [f"--{name}={value}" for name, value in (point or {}).items()])


def run_main(arguments, log_path, python):
    """Runs main.py with `arguments`, its output into `log_path`; (exit status, wall seconds, output)."""
    os.makedirs(os.path.dirname(log_path), exist_ok=True)
    start = time.perf_counter()
    with open(log_path, "w", encoding="utf-8") as log:
        log.write("python main.py " + shlex.join(arguments) + "\n")
        log.flush()
        # The user's working directory: relative paths in pass-through flags mean what they meant to them.
        status = subprocess.call([python, MAIN, *arguments], stdout=log, stderr=subprocess.STDOUT)
    seconds = time.perf_counter() - start
    with open(log_path, encoding="utf-8", errors="replace") as f:
        return status, seconds, f.read()


def last_epoch(folder):
    """The last history.csv row of a pretraining folder as floats where they parse ({} when absent)."""
    try:
        with open(os.path.join(folder, "history.csv"), encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
    except OSError:
        return {}
    if not rows:
        return {}
    out = {}
    for key, value in rows[-1].items():
        try:
            out[key] = float(value)
        except (TypeError, ValueError):
            pass
    return out


def probe_results(folder):
    """linear_eval.json's list of {"fraction", "accuracy_mean", "accuracy_std", ...} in `folder`."""
    with open(os.path.join(folder, "linear_eval.json"), encoding="utf-8") as f:
        return json.load(f)["results"]


def load_results(out):
    """The sweep.json of an earlier (perhaps killed) invocation, or an empty one."""
    try:
        with open(os.path.join(out, RESULTS_FILE), encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return {"points": {}}


def save_results(out, results):
    """sweep.json, atomically: it is what a rerun resumes from."""
    path = os.path.join(out, RESULTS_FILE)
    temporary = path + ".tmp"
    with open(temporary, "w", encoding="utf-8") as f:
        json.dump(results, f, indent=1)
    os.replace(temporary, path)


def finished(entry, commands, folder):
    """True when an earlier invocation finished this point with exactly these commands."""
    return (entry is not None and entry.get("commands") == commands
            and os.path.exists(os.path.join(folder, "linear_eval.json")))


def run_point(args, name, point, results):
    """Pretrains and probes one grid point (or the random-init baseline when `point` is None), unless
    sweep.json says it is finished; records it in sweep.json. Returns the entry, or raises SweepError."""
    folder = os.path.join(args.out, name)
    commands = {"probe": probe_command(args, point, folder)}
    if point is not None:
        commands["pretrain"] = pretrain_command(args, point, folder)
    entry = results["points"].get(name)
    if finished(entry, commands, folder):
        print(f"{name}: finished earlier, skipped", flush=True)
        return entry
    entry = {"flags": point, "folder": folder, "commands": commands, "seconds": {}}
    steps = (("pretrain", "probe") if point is not None else ("probe",))
    if point is None:
        os.makedirs(folder, exist_ok=True)  # an empty folder: linear_eval probes a random-init encoder
    for step in steps:
        log_path = os.path.join(args.out, "logs", f"{name}.{step}.log")
        print(f"{name}: {step} ... (log: {log_path})", flush=True)
        status, seconds, output = run_main(commands[step], log_path, args.python)
        if status != 0:
            tail = "\n".join(output.strip().splitlines()[-8:])
            raise SweepError(f"{name}: {step} failed with status {status} (log: {log_path}):\n{tail}", status)
        resumed = re.search(r"Resuming from epoch (\d+)", output)
        entry["seconds"][step] = round(seconds, 1)
        if resumed:
            entry["resumed_from_epoch"] = int(resumed.group(1))
        print(f"{name}: {step} done in {seconds:.0f} s" + (f" (resumed from epoch {resumed.group(1)})"
                                                           if resumed else ""), flush=True)
    entry["last_epoch"] = last_epoch(folder) if point is not None else {}
    entry["probe"] = probe_results(folder)
    results["points"][name] = entry
    save_results(args.out, results)
    return entry


class SweepError(Exception):
    """A main.py run of the sweep failed; `status` is its exit status."""

    def __init__(self, message, status):
        super().__init__(message)
        self.status = status


# --- the report -------------------------------------------------------------------------------------------

def _accuracy(result):
    text = f"{100 * result['accuracy_mean']:.1f}"
    return text + (f" +- {100 * result['accuracy_std']:.1f}" if result.get("repeats", 1) > 1 and
                   result["fraction"] < 1.0 else "")


def table_rows(grid, entries):
    """The Markdown table: one row per grid point (then the baseline), the best probe in bold."""
    names = [name for name, _ in grid]
    fractions = [r["fraction"] for r in next(iter(entries.values()))["probe"]]
    header = (["encoder"] + [f"`--{n}`" for n in names] + ["last loss", "contrastive acc."]
              + [f"probe, {100 * f:g}% labels" for f in fractions] + ["minutes"])
    rows = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    best = {f: max(next(r["accuracy_mean"] for r in e["probe"] if r["fraction"] == f)
                   for key, e in entries.items() if key != BASELINE) for f in fractions}
    for key, entry in entries.items():
        last = entry.get("last_epoch") or {}
        cells = ["random init" if key == BASELINE else "SimCLR"]
        cells += [entry["flags"][n] if entry.get("flags") else "-" for n in names]
        cells += [f"{last['loss']:.3f}" if "loss" in last else "-",
                  f"{100 * last['contrastive_accuracy']:.1f}%" if "contrastive_accuracy" in last else "-"]
        for fraction in fractions:
            result = next(r for r in entry["probe"] if r["fraction"] == fraction)
            text = _accuracy(result) + "%"
            bold = key != BASELINE and result["accuracy_mean"] == best[fraction]
            cells.append(f"**{text}**" if bold else text)
        cells.append(f"{sum(entry['seconds'].values()) / 60:.1f}")
        rows.append("| " + " | ".join(cells) + " |")
    return rows


def plot(entries, path):
    """Probe accuracy per grid point (one line per label fraction), as sweep.png."""
    from simclr_tf.evaluation.classification_plots import plot_accuracy_curves
    by_point = {("random init" if key == BASELINE else key.replace("_", "\n")): entry["probe"]
                for key, entry in entries.items()}
    plot_accuracy_curves(by_point, path, xlabel="grid point", title="Recipe sweep: linear probe of h")


def readme_section(command, machine_text, rows, total_seconds, num_points, num_epochs, baseline):
    """The README's recipe-sweep section: command, machine, cost, table."""
    probes = ", plus the random-init probe," if baseline else ""
    return "\n".join([
        "```bash", command, "```", "",
        f"{num_points} grid points of {num_epochs} pretraining epoch(s) each{probes} took "
        f"{total_seconds / 60:.0f} minutes of wall time on {machine_text} (\"minutes\" per row: its pretraining "
        "and probe).", "", *rows])


# --- main -------------------------------------------------------------------------------------------------

def parse_args(argv=None):
    """The sweep's own options; everything after a lone `--` passes through to every main.py run."""
    argv = sys.argv[1:] if argv is None else list(argv)
    own, passthrough = (argv[:argv.index("--")], argv[argv.index("--") + 1:]) if "--" in argv else (argv, [])
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n".join(__doc__.splitlines()[1:]))
    add = parser.add_argument
    add("--train_file_path", required=True, help="the pretraining list (images)")
    add("--probe_train_file_path", required=True, help="labelled 'path,label' list the probe trains on")
    add("--probe_val_file_path", required=True, help="labelled 'path,label' list the probe is scored on")
    add("--grid", required=True, help="space-separated NAME=V1,V2,... items of main.py flags")
    add("--num_epochs", type=int, required=True, help="pretraining epochs of every grid point (the budget)")
    add("--out", default="logs/recipe_sweep", help="folder of the sweep: one run folder per point, sweep.json")
    add("--probe_fractions", default="1.0", help="label fractions of the probe, space separated")
    add("--no_baseline", action="store_true", help="skip the random-init probe")
    add("--write_readme", action="store_true", help="rewrite the README's recipe-sweep section with the table")
    add("--readme", default=README, help="the README --write_readme rewrites (default: the checkout's)")
    add("--python", default=sys.executable, help=argparse.SUPPRESS)
    args = parser.parse_args(own)
    if args.num_epochs < 1:
        parser.error("--num_epochs must be at least 1")
    try:
        args.grid = parse_grid(args.grid, main_py_flags())
    except ValueError as e:
        parser.error(str(e))
    clashing = [a for a in passthrough if a.lstrip("-").split("=")[0] in OWN_FLAGS]
    if clashing:
        parser.error(f"pass-through flags {clashing} are set by the sweep itself")
    args.passthrough = passthrough
    # Absolute, so that sweep.json's commands name the same files whatever the working directory of a rerun.
    for name in ("out", "train_file_path", "probe_train_file_path", "probe_val_file_path"):
        setattr(args, name, os.path.abspath(getattr(args, name)))
    args.command = "python benchmarks/recipe_sweep.py " + shlex.join(argv)
    return args


def main(argv=None):
    """Runs the sweep (skipping what an earlier invocation finished) and writes its report."""
    args = parse_args(argv)
    points = grid_points(args.grid)
    names = [point_name(p) for p in points]
    if len(set(names)) != len(names) or BASELINE in names:
        print("error: two grid points give the same folder name; use distinct values", file=sys.stderr)
        return 2
    os.makedirs(args.out, exist_ok=True)
    results = load_results(args.out)
    print(f"Recipe sweep: {len(points)} grid point(s) x {args.num_epochs} epoch(s) into {args.out}", flush=True)
    start = time.perf_counter()
    entries = {}
    try:
        for name, point in zip(names, points):
            entries[name] = run_point(args, name, point, results)
        if not args.no_baseline:
            entries[BASELINE] = run_point(args, BASELINE, None, results)
    except SweepError as e:
        print(f"error: {e}\nRerun the same command to continue where the sweep stopped.", file=sys.stderr)
        return e.status if e.status > 0 else 1  # a main.py killed by a signal has a negative status
    results.update(command=args.command, grid=dict(args.grid), num_epochs=args.num_epochs,
                   date=datetime.date.today().isoformat(), order=list(entries))
    save_results(args.out, results)
    rows = table_rows(args.grid, entries)
    with open(os.path.join(args.out, TABLE_FILE), "w", encoding="utf-8") as f:
        f.write("\n".join(rows) + "\n")
    plot(entries, os.path.join(args.out, PLOT_FILE))
    print("\n".join(rows))
    total = sum(sum(e["seconds"].values()) for e in entries.values())
    print(f"Wall time of the runs: {total / 60:.1f} minutes (this invocation: "
          f"{(time.perf_counter() - start) / 60:.1f}); results in {args.out}/{RESULTS_FILE}, {TABLE_FILE}, "
          f"{PLOT_FILE}", flush=True)
    if args.write_readme:
        machine = pretrain_throughput.describe_cpu(pretrain_throughput.cpu_info())
        section = readme_section(args.command, machine, rows, total, len(points), args.num_epochs, not args.no_baseline)
        pretrain_throughput.write_readme(args.readme, section, MARKERS)
        print(f"Rewrote the recipe-sweep section of {args.readme}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

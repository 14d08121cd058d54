"""Pretraining throughput: input pipeline, training step, full run, host CPU, memory, matmul-peak share.

    python benchmarks/pretrain_throughput.py [--configs resnet18:32:128,resnet50:224:32]
        [--precisions float32,mixed_bfloat16] [--augment_on host,device]
        [--strategy one_device,mirrored,multi_worker] [--workers 2] [--jit_compile auto]
        [--steps 5] [--pipeline_batches 20] [--repeats 3] [--torch_python /path/to/python]
        [--json results.json] [--write_readme [--section NAME]]

A config is backbone:size:batch[:small|:imagenet] (size "32" or "96x64" = height x width; the stem
is chosen by size as the CLI does unless the suffix names it; "backbone:size" uses --batch). Every
config is combined with every --precisions, --augment_on, --strategy and --jit_compile value. For
each combination the script reports, from one run of the script:

(a) input pipeline: source images/s of the tf.data pipeline alone, decoding JPEG files written to
    a temporary folder (smooth random images, which compress like photos) and, with
    --augment_on=host, making the two views; with device, decoding and resizing only;
(b) training step: source images/s of `Model.fit` on one synthetic batch repeated (two float32
    views, or with --augment_on=device uint8 images + seeds, so the step makes the views);
(c) full run: source images/s of `Model.fit` on the files, pipeline and step together, as
    `main.py --task=pretrain` trains;
(d) host CPU-seconds per source image spent by the input pipeline during (a) (process user + sys
    time of every thread / images): a host core feeds 1 / (d) images/s;
(e) peak host RSS of the full-run process and, on GPU, its peak device memory
    (tf.config.experimental.get_memory_info);
(f) the step's share of the device's matmul peak: FLOPs counted from the model's Conv2D /
    DepthwiseConv2D / SeparableConv2D / Dense layers (2 x MACs, x3 for forward + backward, x2N
    views) x steps/s, over the FLOP/s of a large matmul in the configuration's compute dtype on
    the same device, measured in the same process right after the step.

Machines throttle and drift, so measurements are interleaved (every config once, then every config
again, --repeats times), each in a fresh subprocess (benchmarks/_throughput_worker.py; peak memory
is then that measurement's own), and every figure is reported as the median with its range. The
models, precision policy, strategy, XLA default and augmentations are built by the CLI's own code
from its own flags (--extra_flags passes more, e.g. "--blur=false --loss=dcl"). --write_readme
rewrites the README section between <!-- benchmark:start --> and <!-- benchmark:end --> (with
--section NAME, between <!-- benchmark:NAME:start --> and <!-- benchmark:NAME:end -->).

--strategy=multi_worker runs the step and full-run measurements as one job of --workers processes
on localhost (each with its own TF_CONFIG, as "Running on several machines" in the README); its
figures are the job's. --torch_python names an interpreter with PyTorch installed: every config
of a ResNet at a square size then gets a row for the same training step in PyTorch
(benchmarks/torch_step.py, torch.compile), measured right after the project's own step.
"""
import argparse
import datetime
import json
import math
import os
import platform
import shlex
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")  # as main.py does; set it to 0 to compare

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
WORKER = os.path.join(HERE, "_throughput_worker.py")
README = os.path.join(REPO, "README.md")
START_MARKER, END_MARKER = "<!-- benchmark:start -->", "<!-- benchmark:end -->"


def section_markers(name):
    """The README markers of the benchmark section `name` ("" = the main table)."""
    if not name:
        return START_MARKER, END_MARKER
    return f"<!-- benchmark:{name}:start -->", f"<!-- benchmark:{name}:end -->"
KINDS = ("pipeline", "step", "full")
STRATEGIES = ("one_device", "mirrored", "auto", "multi_worker")
TORCH_STEP = os.path.join(HERE, "torch_step.py")
BF16_FEATURES = ("avx512_bf16", "amx_bf16", "avx512_fp16")
TORCH_BACKBONES = ("resnet18", "resnet34", "resnet50")
_BACKBONE_NAMES = {"resnet18": "ResNet-18", "resnet34": "ResNet-34", "resnet50": "ResNet-50",
                   "resnet101": "ResNet-101", "resnet152": "ResNet-152"}


# --- configurations ---------------------------------------------------------------------------------------

def parse_size(text):
    """(height, width) from "32" or "96x64"."""
    parts = text.lower().split("x")
    if len(parts) not in (1, 2) or not all(p.isdigit() and int(p) > 0 for p in parts):
        raise ValueError(f"image size {text!r}: expected a positive integer or HxW")
    return (int(parts[0]), int(parts[-1]))


def parse_configs(text, default_batch):
    """[{backbone, size (h, w), batch, stem None|"small"|"imagenet"}] from --configs."""
    configs = []
    for item in filter(None, (s.strip() for s in text.split(","))):
        fields = item.split(":")
        if len(fields) < 2:
            raise ValueError(f"config {item!r}: expected backbone:size[:batch][:small|:imagenet]")
        backbone, size, rest = fields[0], parse_size(fields[1]), fields[2:]
        batch, stem = default_batch, None
        if rest and rest[0].isdigit():
            batch, rest = int(rest[0]), rest[1:]
        if rest:
            if len(rest) > 1 or rest[0] not in ("small", "imagenet"):
                raise ValueError(f"config {item!r}: the last field must be a batch size, 'small' or 'imagenet'")
            if not backbone.startswith("resnet"):
                raise ValueError(f"config {item!r}: a stem can only be chosen for the project's ResNets")
            stem = rest[0]
        if batch < 1:
            raise ValueError(f"config {item!r}: the batch must be at least 1")
        configs.append({"backbone": backbone, "size": size, "batch": batch, "stem": stem})
    if not configs:
        raise ValueError("--configs names no configuration")
    return configs


def split_list(text, allowed, option):
    values = [v.strip() for v in text.split(",") if v.strip()]
    bad = [v for v in values if allowed is not None and v not in allowed]
    if bad or not values:
        raise ValueError(f"{option}={text!r}: expected a comma-separated list of {', '.join(allowed)}")
    return values


def expand(args):
    """Every combination of config x precision x augment_on x strategy x jit_compile, in that nesting."""
    combos = []
    for config in parse_configs(args.configs, args.batch):
        for precision in split_list(args.precisions, ("float32", "mixed_bfloat16", "mixed_float16"), "--precisions"):
            for augment_on in split_list(args.augment_on, ("host", "device"), "--augment_on"):
                for strategy in split_list(args.strategy, STRATEGIES, "--strategy"):
                    for jit in split_list(args.jit_compile, ("auto", "true", "false"), "--jit_compile"):
                        combos.append(dict(config, precision=precision, augment_on=augment_on, strategy=strategy,
                                           jit_compile=jit))
    for i, combo in enumerate(combos):
        combo["index"] = i
        combo["name"] = config_name(combo)
        combo["cli_flags"] = cli_flags(combo, args)
        combo["file_size"] = parse_size(args.source_size) if args.source_size else combo["size"]
    return combos + (torch_combos(combos) if args.torch_python else [])


def torch_combos(combos):
    """One PyTorch reference per (backbone, size, batch, stem, precision) of the project's configs that
    benchmarks/torch_step.py can run: its training step only, on synthetic views."""
    seen, references = set(), []
    for combo in combos:
        key = (combo["backbone"], combo["size"], combo["batch"], combo["stem"], combo["precision"])
        square = combo["size"][0] == combo["size"][1]
        if key in seen or not square or combo["backbone"] not in TORCH_BACKBONES or \
                combo["precision"] not in ("float32", "mixed_bfloat16"):
            continue
        seen.add(key)
        reference = dict(combo, torch=True, augment_on="host", strategy="one_device", jit_compile="torch.compile")
        reference["name"] = "pytorch " + config_name(reference)
        reference["torch_args"] = ["--backbone", combo["backbone"], "--size", str(combo["size"][0]),
                                   "--batch", str(combo["batch"]), "--precision", combo["precision"]]
        if combo["stem"]:
            reference["torch_args"] += ["--stem", combo["stem"]]
        reference["index"] = len(combos) + len(references)
        references.append(reference)
    return references


def config_name(combo):
    h, w = combo["size"]
    side = f"{h}" if h == w else f"{h}x{w}"
    stem = f":{combo['stem']}" if combo["stem"] else ""
    return (f"{combo['backbone']}:{side}:{combo['batch']}{stem} {combo['precision']} {combo['augment_on']} "
            f"{combo['strategy']} jit={combo['jit_compile']}")


def cli_flags(combo, args):
    """The `main.py --task=pretrain` flags of a configuration (the worker parses them with the CLI's parser)."""
    h, w = combo["size"]
    flags = ["--task=pretrain", f"--backbone={combo['backbone']}", f"--input_size={h} {w}",
             f"--batch_size={combo['batch']}", f"--precision={combo['precision']}",
             f"--augment_on={combo['augment_on']}", f"--strategy={combo['strategy']}",
             "--num_epochs=100", "--knn_every=0", "--diagnostics_every=0", "--seed=0"]
    if combo["stem"]:
        flags.append(f"--small_stem={'true' if combo['stem'] == 'small' else 'false'}")
    if combo["jit_compile"] != "auto":
        flags.append(f"--jit_compile={combo['jit_compile']}")
    return flags + shlex.split(args.extra_flags)


# --- the machine ------------------------------------------------------------------------------------------

def cpu_info():
    """CPU model, core counts, bf16/fp16 features and memory, without importing TensorFlow."""
    model, flags = None, set()
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip()
                if key in ("model name", "Model", "cpu model") and model is None:
                    model = value.strip()
                elif key in ("flags", "Features") and not flags:
                    flags = set(value.split())
    except OSError:
        pass
    memory = None
    try:
        with open("/proc/meminfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    memory = int(line.split()[1]) / 1024 ** 2
    except OSError:
        pass
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    vector = "avx512" if "avx512f" in flags else "avx2" if "avx2" in flags else "neon" if "asimd" in flags else None
    return {"model": model or platform.processor() or platform.machine(), "logical_cores": os.cpu_count(),
            "usable_cores": usable, "bf16_features": [f for f in BF16_FEATURES if f in flags],
            "vector_isa": vector, "memory_gib": memory, "platform": platform.platform()}


def describe_cpu(cpu):
    features = ", ".join(cpu["bf16_features"]) or "none"
    cores = f"{cpu['usable_cores']}-core" if cpu["usable_cores"] == cpu["logical_cores"] else \
        f"{cpu['usable_cores']} of {cpu['logical_cores']} cores,"
    memory = f", {cpu['memory_gib']:.1f} GiB RAM" if cpu["memory_gib"] else ""
    isa = f", {cpu['vector_isa'].upper()}" if cpu["vector_isa"] else ""
    return f"{cores} {cpu['model']}{isa} (bf16/fp16 features: {features}){memory}"


def describe_tensorflow(machine):
    if not machine.get("tensorflow"):
        return "TensorFlow: unknown (no worker reported)"
    gpus = machine.get("gpus") or []
    gpu_text = ", ".join(g.get("device_name") or g["name"] for g in gpus) if gpus else "no GPU"
    return (f"{gpu_text}; TensorFlow {machine['tensorflow']}, Keras {machine['keras']}, devices "
            f"{', '.join(machine.get('devices', []))}, oneDNN {machine.get('onednn', 'unknown')}")


def onednn_status(stderr_text):
    env = os.environ.get("TF_ENABLE_ONEDNN_OPTS")
    if "oneDNN custom operations are on" in stderr_text:
        return f"on (TF_ENABLE_ONEDNN_OPTS={env})"
    return f"off (TF_ENABLE_ONEDNN_OPTS={env}; TensorFlow did not report oneDNN custom operations)"


# --- running the workers ----------------------------------------------------------------------------------

def write_images(folder, count, size):
    """`count` JPEG files of `size` (h, w): smooth random images (decoding like photos, not noise)."""
    import numpy as np
    from PIL import Image
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(0)
    h, w = size
    paths = []
    for i in range(count):
        path = os.path.join(folder, f"{i:05d}.jpg")
        small = rng.integers(0, 255, (h // 8 + 1, w // 8 + 1, 3), dtype=np.uint8)
        Image.fromarray(small).resize((w, h), Image.BICUBIC).save(path, quality=90)
        paths.append(path)
    return paths


def _start_worker(job, folder, tag, args, env):
    """Starts one worker process on `job`; (process, its open stderr file, its file paths)."""
    paths = {name: os.path.join(folder, f"{name}_{tag}.{ext}")
             for name, ext in (("job", "json"), ("result", "json"), ("stderr", "txt"))}
    with open(paths["job"], "w", encoding="utf-8") as f:
        json.dump(job, f)
    stderr = open(paths["stderr"], "w", encoding="utf-8")  # noqa: SIM115 (closed by _finish_worker)
    process = subprocess.Popen([args.python, WORKER, paths["job"], paths["result"]], stdout=subprocess.DEVNULL,
                               stderr=stderr, cwd=REPO, env=env)
    return process, stderr, paths


def _finish_worker(started, timeout):
    """Waits for a started worker (killed after `timeout` s); (its result dict, its stderr text)."""
    process, stderr, paths = started
    try:
        status = process.wait(timeout=max(1.0, timeout))
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        status = "timeout"
    stderr.close()
    with open(paths["stderr"], encoding="utf-8", errors="replace") as f:
        stderr_text = f.read()
    result = None
    if os.path.exists(paths["result"]):
        with open(paths["result"], encoding="utf-8") as f:
            result = json.load(f)
    if result is None:
        tail = "\n".join(stderr_text.strip().splitlines()[-5:])
        reason = "timed out" if status == "timeout" else f"exit status {status}"
        result = {"error": f"worker {reason} without a result (killed? out of memory?): {tail}"}
    return result, stderr_text


def run_worker(job, folder, number, args):
    """Runs one worker process; returns (result dict, its stderr text)."""
    start = time.perf_counter()
    result, stderr_text = _finish_worker(_start_worker(job, folder, f"{number:04d}", args, os.environ.copy()),
                                         args.timeout)
    result["wall_seconds"] = time.perf_counter() - start
    return result, stderr_text


def free_ports(count):
    """`count` TCP ports free on localhost right now (for the workers of a multi_worker job)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("localhost", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def run_worker_group(job, folder, number, args):
    """A multi_worker measurement: --workers processes on localhost, each with its own TF_CONFIG, run
    the same job as one MultiWorkerMirroredStrategy job. Returns the chief's result (its images/s
    are the job's: every step trains on the global batch) with every worker's figures beside it."""
    hosts = [f"localhost:{port}" for port in free_ports(args.workers)]
    job = dict(job, matmul_seconds=0)  # the workers share the machine: no single-device peak to compare with
    start = time.perf_counter()
    started = [_start_worker(job, folder, f"{number:04d}_w{index}", args,
                             dict(os.environ, TF_CONFIG=json.dumps({"cluster": {"worker": hosts},
                                                                    "task": {"type": "worker", "index": index}})))
               for index in range(args.workers)]
    finished = [_finish_worker(worker, args.timeout - (time.perf_counter() - start)) for worker in started]
    results, texts = [result for result, _ in finished], [text for _, text in finished]
    chief = dict(next((r for r in results if r.get("error")), results[0]))
    chief["workers"] = [{kind: r.get(kind) for kind in job["kinds"]} | {"error": r.get("error")} for r in results]
    chief["wall_seconds"] = time.perf_counter() - start
    return chief, texts[0]


def run_torch(combo, number, folder, args):
    """The PyTorch reference step (benchmarks/torch_step.py) in --torch_python; (result, stderr text)."""
    command = [args.torch_python, TORCH_STEP, *combo["torch_args"], "--steps", str(args.steps),
               "--warmup_steps", str(args.warmup_steps)]
    start = time.perf_counter()
    try:
        completed = subprocess.run(command, capture_output=True, text=True, timeout=args.timeout, cwd=folder,
                                   env=dict(os.environ, TORCHINDUCTOR_CACHE_DIR=os.path.join(folder, "inductor")))
        lines = [line for line in completed.stdout.splitlines() if line.startswith("{")]
        if completed.returncode == 0 and lines:
            figures = json.loads(lines[-1])
            result = {"step": figures, "torch": {k: figures[k] for k in ("torch", "compiled", "device", "threads")}}
        else:
            tail = "\n".join(completed.stderr.strip().splitlines()[-5:])
            result = {"error": f"torch_step.py exit status {completed.returncode}: {tail}"}
        stderr_text = completed.stderr
    except (OSError, subprocess.TimeoutExpired) as e:
        result, stderr_text = {"error": f"torch_step.py did not run: {e}"}, ""
    result["wall_seconds"] = time.perf_counter() - start
    return result, stderr_text


def plan(combos, args):
    """The worker jobs in running order: (repeat, kinds, combos the result is for, the combo it runs).

    Interleaved: within every repeat each kind of measurement runs once per config (A B A B ...).
    The input pipeline does not depend on precision, strategy or XLA, so with isolated
    measurements it runs once per (size, batch, augment_on) and serves every config sharing them."""
    kinds = [k for k in KINDS if k in split_list(args.measure, KINDS, "--measure")]
    ours = [c for c in combos if not c.get("torch")]
    references = [c for c in combos if c.get("torch")] if "step" in kinds else []
    jobs = []
    for repeat in range(args.repeats):
        if args.isolation == "config":
            jobs += [(repeat, kinds, [c], c) for c in ours] + [(repeat, ["step"], [c], c) for c in references]
            continue
        for kind in kinds:
            if kind == "pipeline":
                groups = {}
                for c in ours:
                    groups.setdefault((c["size"], c["file_size"], c["batch"], c["augment_on"]), []).append(c)
                jobs += [(repeat, [kind], group, group[0]) for group in groups.values()]
            else:
                jobs += [(repeat, [kind], [c], c) for c in ours]
                if kind == "step":  # the PyTorch step right after ours, in the same stretch of machine time
                    jobs += [(repeat, [kind], [c], c) for c in references]
    return kinds, jobs


def progress_line(kind, result):
    figures = result.get(kind)
    if figures is None:
        return f"{kind}: FAILED"
    text = f"{kind} {figures['images_per_s']:.4g} img/s"
    if kind == "pipeline":
        text += f", {figures['cpu_s_per_image'] * 1e3:.3g} CPU-ms/img ({figures['cores_busy']:.2f} cores busy)"
    text += f", RSS {figures['peak_rss_gb']:.2f} GB"
    if figures.get("peak_device_memory_gb"):
        text += f", device {figures['peak_device_memory_gb']:.2f} GB"
    return text


# --- summarising ------------------------------------------------------------------------------------------

def stats(values):
    values = [v for v in values if v is not None]
    if not values:
        return None
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "values": values,
            "n": len(values)}


def summarise(combo):
    runs = combo["runs"]

    def figure(kind, key):
        return stats([r[key] for r in runs[kind] if r is not None and r.get(key) is not None])

    flops = next((r["flops"]["step_flops_per_image"] for r in combo["results"] if r.get("flops")), None)
    # The peak is one device's; the step runs on every replica of the strategy.
    replicas = next((r["distribution"]["replicas"] for r in combo["results"] if r.get("distribution")), 1)
    peaks = [r["matmul_peak"]["flops_per_s"] for r in combo["results"] if r.get("matmul_peak")]
    step_shares = [r["step"]["images_per_s"] * flops / (replicas * r["matmul_peak"]["flops_per_s"])
                   for r in combo["results"] if r.get("matmul_peak") and r.get("step") and flops]
    peak = statistics.median(peaks) if peaks else None
    full_shares = [r["images_per_s"] * flops / (replicas * peak) for r in runs["full"] if r and flops and peak]
    return {
        "input_pipeline_images_per_s": figure("pipeline", "images_per_s"),  # (a)
        "training_step_images_per_s": figure("step", "images_per_s"),  # (b)
        "full_run_images_per_s": figure("full", "images_per_s"),  # (c)
        "host_cpu_s_per_image": figure("pipeline", "cpu_s_per_image"),  # (d)
        "pipeline_cores_busy": figure("pipeline", "cores_busy"),
        "full_run_host_cpu_s_per_image": figure("full", "cpu_s_per_image"),
        "peak_rss_gb": figure("full", "peak_rss_gb"),  # (e)
        "peak_device_memory_gb": figure("full", "peak_device_memory_gb"),
        "pipeline_peak_rss_gb": figure("pipeline", "peak_rss_gb"),
        "step_peak_rss_gb": figure("step", "peak_rss_gb"),
        "step_peak_device_memory_gb": figure("step", "peak_device_memory_gb"),
        "step_flops_per_image": flops,  # (f)
        "replicas": replicas,
        "matmul_peak_flops_per_s": stats(peaks),
        "share_of_matmul_peak": stats(step_shares),
        "full_run_share_of_matmul_peak": stats(full_shares),
    }


def describe_combo(combo):
    """Readable configuration, from what the worker built (stem, strategy, XLA as resolved)."""
    if combo.get("torch"):
        return describe_torch(combo)
    result = next((r for r in combo["results"] if r.get("distribution")), None) or \
        next((r for r in combo["results"] if "error" not in r), {})
    h, w = combo["size"]
    parts = [_BACKBONE_NAMES.get(combo["backbone"], combo["backbone"]) + f", {h}x{w}"]
    encoder = result.get("encoder") or {}
    if "small_stem" in encoder:
        parts[0] += ", small stem" if encoder["small_stem"] else ", ImageNet stem"
    parts.append(combo["precision"])
    parts.append(f"views on {combo['augment_on']}")
    dist = result.get("distribution")
    if dist:
        devices = ", ".join(d.split("device:")[-1] for d in dist["devices"])
        where = f"one device ({devices})" if dist["replicas"] == 1 and combo["strategy"] != "mirrored" else \
            f"mirrored, {dist['replicas']} replica(s) ({devices})"
        if combo["strategy"] == "multi_worker":
            workers = len(result.get("workers", [])) or "several"
            where = (f"multi_worker, {workers} worker processes on localhost, {dist['replicas']} replicas "
                     f"({devices} each); the job's global batch per step")
        parts.append(f"{where}, XLA {'on' if dist['jit_compile'] else 'off'}")
    else:
        parts.append(f"{combo['strategy']}, jit_compile {combo['jit_compile']}")
    return "; ".join(parts)


def describe_torch(combo):
    info = next((r["torch"] for r in combo["results"] if r.get("torch")), {})
    h, w = combo["size"]
    small = combo["stem"] == "small" if combo["stem"] else h <= 32
    precision = "float32" if combo["precision"] == "float32" else "bfloat16 autocast"
    how = "torch.compile" if info.get("compiled", True) else "eager"
    return (f"PyTorch {info.get('torch', '')} ({how}), the same training step: "
            f"{_BACKBONE_NAMES.get(combo['backbone'], combo['backbone'])}, {h}x{w}, "
            f"{'small' if small else 'ImageNet'} stem; {precision}; synthetic views")


def _number(value, digits=3):
    """`value` with `digits` significant digits, never in exponent notation."""
    if value is None:
        return "-"
    if value == 0:
        return "0"
    decimals = digits - 1 - math.floor(math.log10(abs(value)))
    return f"{value:.{max(0, decimals)}f}"


def _cell(summary, fmt=_number, unit=""):
    if summary is None:
        return "-"
    text = fmt(summary["median"]) + unit
    if summary["n"] > 1:
        text += f" ({fmt(summary['min'])}-{fmt(summary['max'])})"
    return text


def _flops_text(value):
    return f"{value / 1e12:.3g} TFLOP/s" if value >= 1e12 else f"{value / 1e9:.3g} GFLOP/s"


def table_rows(combos):
    header = ("| configuration | batch (views) | input pipeline img/s | training step img/s | full run img/s | "
              "host CPU-s per image | peak RSS | share of matmul peak |")
    lines = [header, "|" + "---|" * 8]
    for combo in combos:
        s = combo["summary"]
        gb = lambda v: f"{v:.2f}"  # noqa: E731
        memory, device_memory = s["peak_rss_gb"], s["peak_device_memory_gb"]
        memory_note = ""
        if memory is None and s["step_peak_rss_gb"] is not None:  # no full run measured: the step's
            memory, device_memory, memory_note = s["step_peak_rss_gb"], s["step_peak_device_memory_gb"], " (step)"
        memory_text = _cell(memory, gb, " GB") + memory_note
        if device_memory:
            memory_text += f"; device {_cell(device_memory, gb, ' GB')}"
        share = "-"
        if s["share_of_matmul_peak"]:
            dtype = next(r["matmul_peak"]["dtype"] for r in combo["results"] if r.get("matmul_peak"))
            devices = f"{s['replicas']} x " if s["replicas"] > 1 else ""
            share = (_cell(s["share_of_matmul_peak"], lambda v: f"{100 * v:.3g}", "%") + f" of {devices}"
                     + _flops_text(s["matmul_peak_flops_per_s"]["median"]) + f" ({dtype})")
        errors = sorted({r["error"].splitlines()[0][:120] for r in combo["results"] if r.get("error")})
        label = describe_combo(combo) + (f" (failed: {'; '.join(errors)})" if errors else "")
        lines.append(f"| {label} | {combo['batch']} ({2 * combo['batch']}) | "
                     f"{_cell(s['input_pipeline_images_per_s'])} | {_cell(s['training_step_images_per_s'])} | "
                     f"{_cell(s['full_run_images_per_s'])} | "
                     f"{_cell(s['host_cpu_s_per_image'], lambda v: _number(v, 2))} | "
                     f"{memory_text} | {share} |")
    return lines


COLUMNS_TEXT = """\
Columns. *configuration*: backbone and image size (the JPEG files are decoded and resized to it;
it is also the crop size), stem, precision policy (`--precision`), where the two views are made
(`--augment_on`), strategy and XLA as the CLI resolved them. *batch (views)*: source images per
step and the views they give. *input pipeline*: source images/s of the tf.data pipeline alone,
decoding JPEG files (in the page cache) and, with views on host, making both views; with views on
device, decoding and resizing only. *training step*: source images/s of `Model.fit` on one
synthetic batch (two float32 views, or uint8 images + seeds when the step makes the views), so
decoding is left out. *full run*: source images/s of `Model.fit` on the files, pipeline and step
sharing the machine, as `--task=pretrain` trains. *host CPU-s per image*: process CPU time (user +
sys, every thread) of the input pipeline alone per source image: one host core feeds about 1 / this
many images/s, so an accelerator stepping at R images/s needs R x this many cores. *peak RSS*: peak
resident memory of the full-run process (and the peak device memory TensorFlow allocated, on GPU).
*share of matmul peak*: the step's convolution and dense FLOPs per second (2 x multiply-adds of the
Conv2D / DepthwiseConv2D / Dense layers, x3 for forward + backward, x2 views per image; BN,
activations, loss, optimizer and views made in the step not counted) over the FLOP/s of a large
matmul in the compute dtype on the same device (times the replicas), measured in the same process
just after the step. A *multi_worker* row is one job of several worker processes on this machine
(`--strategy=multi_worker`, each with its own TF_CONFIG): its figures are the whole job's (global
batch per step), to read beside the one-device row of the same configuration. A *PyTorch* row
(`--torch_python`) is benchmarks/torch_step.py: the same model, loss and LARS step in PyTorch
with torch.compile, timed the same way on the same synthetic views, right after the project's own
step of that configuration."""


def image_counts(combos, num_images):
    """[(file size (h, w), how many JPEG files)] the run writes: one set per size, enough for 4 batches."""
    sizes = sorted({tuple(c["file_size"]) for c in combos})
    return [(size, num_images or max([256] + [4 * c["batch"] for c in combos if tuple(c["file_size"]) == size]))
            for size in sizes]


def describe_settings(settings, counts, load_average=None):
    """The sentence under the command: repeats, isolation, step counts, the files, the machine's load."""
    files = ", ".join(f"{count} of {h}x{w} px" for (h, w), count in counts)
    text = (f"Each figure is the median over {settings['repeats']} interleaved repeat(s)"
            + (" (min-max in brackets)" if settings["repeats"] > 1 else "")
            + ", each measurement in " + ("its own fresh process" if settings["isolation"] == "measurement"
                                           else "one fresh process per config and repeat") + "; "
            f"{settings['steps']} timed training steps after {settings['warmup_steps']} warm-up steps, "
            f"{settings['pipeline_batches']} timed pipeline batches after {settings['pipeline_warmup']}; "
            f"JPEG files (quality 90, smooth random content): {files}. "
            f"Speeds are source images per second (each gives two views).")
    if load_average and load_average.get("before") and load_average.get("after"):
        text += (f" Load average (1 min) of the machine before / after: {load_average['before'][0]:.2f} / "
                 f"{load_average['after'][0]:.2f}.")
    return text


def readme_section(command, machine_text, settings_text, combos, date, section=""):
    """The README text of a benchmark section; named sections refer to the main table's column notes."""
    columns = COLUMNS_TEXT if not section else \
        "Columns as in the first table of \"Speed on this machine\"; a figure of `-` was not measured."
    lines = [f"Measured {date} with", "", "```bash", command, "```", "",
             textwrap.fill(f"on {machine_text}. {settings_text}", width=100, break_on_hyphens=False), "",
             *table_rows(combos), "", columns]
    return "\n".join(lines)


def render_report(path, readme, section=None):
    """Rewrites a README section from the raw results a run saved with --json (no measuring)."""
    with open(path, encoding="utf-8") as f:
        report = json.load(f)
    settings = report["settings"]
    section = settings.get("section", "") if section is None else section
    combos = report["configs"]
    machine_text = f"{describe_cpu(report['machine']['cpu'])}; {describe_tensorflow(report['machine'])}"
    text = describe_settings(settings, image_counts(combos, settings["num_images"]), report.get("load_average"))
    write_readme(readme, readme_section(report["command"], machine_text, text, combos, report["date"], section),
                 section_markers(section))
    return section


def replace_section(text, section, markers=(START_MARKER, END_MARKER)):
    """`text` with what lies between the two `markers` (default: the benchmark's) replaced by `section`
    (markers kept)."""
    start_marker, end_marker = markers
    start, end = text.find(start_marker), text.find(end_marker)
    if start < 0 or end < start or text.count(start_marker) != 1 or text.count(end_marker) != 1:
        raise ValueError(f"the README must hold {start_marker} and then {end_marker}, once each")
    return text[:start + len(start_marker)] + "\n" + section.rstrip("\n") + "\n" + text[end:]


def write_readme(path, section, markers=(START_MARKER, END_MARKER)):
    """Rewrites the README at `path` with `section` between `markers`, atomically (benchmarks/recipe_sweep.py
    writes its own section with its own markers)."""
    with open(path, encoding="utf-8") as f:
        text = f.read()
    new_text = replace_section(text, section, markers)
    temporary = path + ".tmp"
    with open(temporary, "w", encoding="utf-8") as f:
        f.write(new_text)
    os.replace(temporary, path)


# --- main -------------------------------------------------------------------------------------------------

def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n".join(__doc__.splitlines()[1:]))
    add = parser.add_argument
    add("--configs", default="resnet18:32:128,resnet18:32:128:imagenet,resnet50:224:32",
        help="comma-separated backbone:size[:batch][:small|:imagenet] (default: %(default)s)")
    add("--batch", type=int, default=128, help="batch of configs that give none (source images; views = 2x)")
    add("--precisions", default="float32", help="comma-separated float32, mixed_bfloat16, mixed_float16")
    add("--augment_on", default="host", help="comma-separated host, device")
    add("--strategy", default="one_device", help="comma-separated one_device, mirrored, auto")
    add("--jit_compile", default="auto", help="comma-separated auto (the CLI's default: on GPU only), true, false")
    add("--steps", type=int, default=5, help="timed training steps, after --warmup_steps")
    add("--warmup_steps", type=int, default=2, help="untimed first steps (tracing, XLA compilation, autotuning)")
    add("--pipeline_batches", type=int, default=20, help="timed input-pipeline batches")
    add("--pipeline_warmup", type=int, default=3, help="untimed first input-pipeline batches")
    add("--repeats", type=int, default=3, help="interleaved rounds over every configuration")
    add("--measure", default="pipeline,step,full", help="which measurements: pipeline, step, full")
    add("--isolation", choices=("measurement", "config"), default="measurement",
        help="a fresh process per measurement (default), or one per config and repeat (faster; peak memory "
             "then accumulates over its measurements)")
    add("--num_images", type=int, default=0, help="JPEG files written per size (default: max(4 x batch, 256))")
    add("--source_size", default="", help="side (or HxW) of the JPEG files (default: the config's size; larger "
                                          "files make decoding costlier, like real photos)")
    add("--matmul_seconds", type=float, default=2.0, help="time spent measuring the matmul peak per step process")
    add("--matmul_size", type=int, default=0, help="largest matmul side tried (default 2048 on CPU, 8192 on GPU)")
    add("--extra_flags", default="", help="more main.py flags for every config, e.g. '--blur=false --proj_dim=64'")
    add("--json", default="", help="write every raw result and summary here")
    add("--write_readme", action="store_true", help="rewrite the README's benchmark section with the table")
    add("--readme", default=README, help="the README --write_readme rewrites (default: the checkout's)")
    add("--section", default=None, help="with --write_readme or --render_json: rewrite the section between "
                                        "<!-- benchmark:NAME:start --> and <!-- benchmark:NAME:end --> instead of "
                                        "the main table's markers, so that comparisons too costly to cross with "
                                        "every config get their own table")
    add("--timeout", type=float, default=3 * 3600, help="seconds before a worker process is killed")
    add("--workers", type=int, default=2, help="worker processes on localhost of a --strategy=multi_worker config")
    add("--torch_python", default="", help="a Python interpreter with PyTorch: adds the same training step in PyTorch "
                                           "(benchmarks/torch_step.py, torch.compile) beside every config it can run")
    add("--render_json", default="", help="measure nothing: rewrite the README section (--section, default: the "
                                          "one the run wrote) from the raw results of an earlier --json run")
    add("--python", default=sys.executable, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    for name in ("steps", "warmup_steps", "pipeline_batches", "pipeline_warmup", "repeats"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1")
    if args.num_images < 0:
        parser.error("--num_images must be >= 0")
    if args.section and not all(c.isalnum() or c in "_-" for c in args.section):
        parser.error("--section must be letters, digits, '_' or '-'")
    if args.workers < 2:
        parser.error("--workers must be at least 2")
    if args.torch_python and not os.path.exists(args.torch_python):
        parser.error(f"--torch_python={args.torch_python}: no such file")
    try:
        args.combos = expand(args)
        plan(args.combos, args)
    except ValueError as e:
        parser.error(str(e))
    if args.num_images and any(args.num_images < c["batch"] for c in args.combos):
        parser.error("--num_images must be at least every config's batch (an epoch needs one full batch)")
    return args


def main(argv=None):
    args = parse_args(argv)
    if args.render_json:
        section = render_report(args.render_json, args.readme, args.section)
        print(f"Rewrote the benchmark section {section or '(main)'} of {args.readme} from {args.render_json}")
        return 0
    argv = sys.argv[1:] if argv is None else list(argv)
    command = "python benchmarks/pretrain_throughput.py" + ("" if not argv else " " + shlex.join(argv))
    combos = args.combos
    cpu = cpu_info()
    load_before = os.getloadavg() if hasattr(os, "getloadavg") else None
    print(f"CPU: {describe_cpu(cpu)}; load average {load_before[0]:.2f}" if load_before else
          f"CPU: {describe_cpu(cpu)}", flush=True)
    kinds, jobs = plan(combos, args)
    print(f"{len(combos)} configuration(s) x {args.repeats} repeat(s): {len(jobs)} worker process(es), "
          f"interleaved; each figure is the median (min-max) over repeats", flush=True)
    for combo in combos:
        combo["runs"] = {kind: [None] * args.repeats for kind in KINDS}
        combo["results"] = []
    machine, onednn = {}, None
    with tempfile.TemporaryDirectory(prefix="simclr_throughput_") as folder:
        path_files, counts = {}, image_counts(combos, args.num_images)
        for file_size, count in counts:
            paths = write_images(os.path.join(folder, f"images_{file_size[0]}x{file_size[1]}"), count, file_size)
            path_files[file_size] = os.path.join(folder, f"paths_{file_size[0]}x{file_size[1]}.txt")
            with open(path_files[file_size], "w", encoding="utf-8") as f:
                f.write("\n".join(paths) + "\n")
            print(f"Wrote {count} JPEG files of {file_size[0]}x{file_size[1]} px", flush=True)
        for number, (repeat, job_kinds, targets, runner) in enumerate(jobs):
            job = {"kinds": job_kinds, "cli_flags": runner["cli_flags"], "paths_file": path_files[runner["file_size"]],
                   "steps": args.steps, "warmup_steps": args.warmup_steps, "pipeline_batches": args.pipeline_batches,
                   "pipeline_warmup": args.pipeline_warmup, "matmul_seconds": args.matmul_seconds,
                   "matmul_size": args.matmul_size,
                   "hide_accelerators": args.isolation == "measurement" and job_kinds == ["pipeline"]}
            if runner.get("torch"):
                result, stderr_text = run_torch(runner, number, folder, args)
            elif runner["strategy"] == "multi_worker" and job_kinds != ["pipeline"]:
                result, stderr_text = run_worker_group(job, folder, number, args)
            else:
                result, stderr_text = run_worker(job, folder, number, args)
            if onednn is None and "error" not in result and "machine" in result:
                onednn = onednn_status(stderr_text)
                print(f"TensorFlow: {describe_tensorflow(dict(result['machine'], onednn=onednn))}", flush=True)
            if result.get("machine") and (not machine or result.get("distribution")):
                machine = dict(result["machine"])
            who = runner["name"] if len(targets) == 1 else \
                f"{runner['name'].split(' ')[0]} {runner['augment_on']} (input pipeline of {len(targets)} configs)"
            if "error" in result:
                print(f"[{number + 1}/{len(jobs)}] repeat {repeat + 1} {'+'.join(job_kinds)} {who}: FAILED: "
                      f"{result['error'].splitlines()[0][:300]}", flush=True)
            else:
                print(f"[{number + 1}/{len(jobs)}] repeat {repeat + 1} {who}: "
                      + "; ".join(progress_line(kind, result) for kind in job_kinds)
                      + f" ({result['wall_seconds']:.0f} s)", flush=True)
            for combo in targets:
                combo["results"].append(dict(result, repeat=repeat, kinds=job_kinds, shared=len(targets) > 1))
                for kind in job_kinds:
                    combo["runs"][kind][repeat] = result.get(kind)
    machine["onednn"] = onednn or "unknown"
    for combo in combos:
        combo["summary"] = summarise(combo)
    load_after = os.getloadavg() if hasattr(os, "getloadavg") else None
    machine_text = f"{describe_cpu(cpu)}; {describe_tensorflow(machine)}"
    load_average = {"before": load_before, "after": load_after}
    settings_text = describe_settings(vars(args), counts, load_average)
    date = datetime.date.today().isoformat()
    print()
    print(f"Machine: {machine_text}")
    print(settings_text)
    print()
    print("\n".join(table_rows(combos)))
    print(flush=True)
    if args.json:
        report = {"command": command, "date": date, "machine": dict(machine, cpu=cpu),
                  "load_average": load_average,
                  "settings": {k: v for k, v in vars(args).items() if k not in ("combos", "python")},
                  "configs": [{k: v for k, v in c.items()} for c in combos]}
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(report, f, indent=1, default=list)
        print(f"Raw results: {args.json}")
    if args.write_readme:
        section = args.section or ""
        write_readme(args.readme, readme_section(command, machine_text, settings_text, combos, date, section),
                     section_markers(section))
        print(f"Rewrote the benchmark section of {args.readme}")
    failed = sum(1 for c in combos for r in c["results"] if r.get("error"))
    if failed:
        print(f"{failed} measurement(s) failed (see the table)", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

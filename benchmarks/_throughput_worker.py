"""One process of benchmarks/pretrain_throughput.py: measures one configuration, writes JSON.

    python benchmarks/_throughput_worker.py JOB.json RESULT.json

Not meant to be run by hand: `pretrain_throughput.py` writes the job file, starts this script in a
fresh process for every measurement (so peak memory is that measurement's own) and reads the
result. The job names the measurements to make, in order (any of "pipeline", "step", "full"), and
the command-line flags of the configuration; everything is built by the CLI's own code from those
flags (`tasks.distribution.setup`: strategy, precision policy and XLA; `tasks.pretrain.
build_simclr_model`: encoder, projection head, LARS schedule, `view_maker` for device views;
`tasks.augmentation_flags.augment_config`; `simclr_tf.data.pipeline.pretrain_dataset`), so the
benchmark trains exactly what `python main.py --task=pretrain` would.

Measurements:

* pipeline: the tf.data pipeline alone, iterated eagerly: decoding the JPEG files (+ the two views
  with --augment_on=host). Wall time and process CPU time (user + sys of every thread) of
  `pipeline_batches` batches after `pipeline_warmup` batches.
* step: `Model.fit` on a synthetic batch held by tf.data (two float32 views, or uint8 images +
  element seeds with --augment_on=device, so the step makes the views), timed from the end of the
  `warmup_steps`-th step to the end of the last, with a per-batch callback (which also waits for
  the device). Then the dtype's matmul peak on the step's device and the model's FLOPs.
* full: `Model.fit` on the pipeline over the files: what the CLI trains.

Peak host RSS (ru_maxrss) and peak device memory (GPU) are read at the end of each measurement,
before the matmul peak is measured; with several measurements in one process they accumulate.
"""
import json
import os
import platform
import resource
import sys
import time
import traceback

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")  # as main.py does
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import keras  # noqa: E402

# The checkout's command line: flag definitions and the tasks' own building blocks.
import config as cli_config  # noqa: E402
from simclr_tf.data.pipeline import pretrain_dataset, steps_per_epoch  # noqa: E402
from simclr_tf.models.resnet import describe_encoder  # noqa: E402
from tasks import distribution, pretrain  # noqa: E402
from tasks.augmentation_flags import augment_config  # noqa: E402
from tasks.image_files import image_source  # noqa: E402
from tasks.sizes import image_sizes  # noqa: E402

GB = 1024 ** 3
# Layers whose multiply-accumulates are counted (what a step's time is mostly made of).
_COUNTED_LAYERS = (keras.layers.Conv2D, keras.layers.DepthwiseConv2D, keras.layers.SeparableConv2D,
                   keras.layers.Dense)


def cpu_seconds():
    """User + system CPU time of this process, all threads (tf.data's included)."""
    return time.process_time()


def peak_rss_gb():
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (GB if sys.platform == "darwin" else 1024 ** 2)  # bytes on macOS, KiB on Linux


def peak_device_memory(devices):
    """{device: peak bytes allocated by TensorFlow} for every GPU among `devices` ({} without one)."""
    peaks = {}
    for name in devices:
        short = name.split("device:")[-1]
        if not short.upper().startswith("GPU"):
            continue
        try:
            peaks[short] = tf.config.experimental.get_memory_info(short)["peak"] / GB
        except (ValueError, KeyError, tf.errors.OpError):
            pass
    return peaks


def memory_figures(devices):
    peaks = peak_device_memory(devices)
    return {"peak_rss_gb": peak_rss_gb(),
            "peak_device_memory_gb": max(peaks.values()) if peaks else None,
            "peak_device_memory_per_device_gb": peaks or None}


def machine_info():
    """What this process's TensorFlow sees (the driver reads the CPU from /proc/cpuinfo itself)."""
    gpus = []
    for gpu in tf.config.list_physical_devices("GPU"):
        details = {}
        try:
            details = tf.config.experimental.get_device_details(gpu)
        except (ValueError, tf.errors.OpError):
            pass
        gpus.append({"name": gpu.name, "device_name": details.get("device_name"),
                     "compute_capability": details.get("compute_capability")})
    build = dict(tf.sysconfig.get_build_info())
    return {"tensorflow": tf.__version__, "keras": keras.__version__, "python": platform.python_version(),
            "numpy": np.__version__,
            "devices": [f"{d.device_type}:{d.name.split(':')[-1]}" for d in tf.config.list_logical_devices()],
            "gpus": gpus, "TF_ENABLE_ONEDNN_OPTS": os.environ.get("TF_ENABLE_ONEDNN_OPTS"),
            "cuda_build": bool(build.get("is_cuda_build")), "cuda_version": build.get("cuda_version"),
            "cudnn_version": build.get("cudnn_version"),
            "intra_op_threads": tf.config.threading.get_intra_op_parallelism_threads(),
            "inter_op_threads": tf.config.threading.get_inter_op_parallelism_threads()}


# --- building what the CLI builds -------------------------------------------------------------------------

def parse_cli_flags(cli_flags):
    cli_config.FLAGS.unparse_flags()
    cli_config.FLAGS(["pretrain_throughput", *cli_flags])
    return cli_config.FLAGS


def build_model(flag_values, devices, crop_size, augment, num_images):
    with devices.scope():
        model, _, _ = pretrain.build_simclr_model(flag_values, crop_size,
                                                  steps_per_epoch(num_images, flag_values.batch_size), devices,
                                                  augment)
    return model


def synthetic_dataset(flag_values, devices, input_size, crop_size):
    """One batch repeated forever: what the step eats, without decoding or host augmentation. In a
    multi-worker job every worker's pipeline yields per-replica batches, as the file pipeline does."""
    return devices.distribute(lambda shard: _synthetic_batches(
        flag_values, input_size, crop_size, flag_values.batch_size // (shard[1] * shard[2]) if shard else None))


def _synthetic_batches(flag_values, input_size, crop_size, batch=None):
    rng = np.random.default_rng(0)
    batch = batch or flag_values.batch_size
    if flag_values.augment_on == "host":
        views = tuple(rng.random((batch, *crop_size, 3), dtype=np.float32) for _ in range(2))
        return tf.data.Dataset.from_tensors(views).repeat()
    images = rng.integers(0, 256, (batch, *input_size, 3), dtype=np.uint8)
    seeds = np.stack([np.full(batch, flag_values.seed), np.arange(batch)], axis=1).astype(np.int64)
    return tf.data.Dataset.from_tensors((images, seeds)).repeat()


def file_dataset(flag_values, devices, source, augment):
    return devices.distribute(lambda shard: pretrain_dataset(
        source, augment, flag_values.batch_size, flag_values.seed, 0, flag_values.augment_on, None, shard))


# --- timing -----------------------------------------------------------------------------------------------

class StepTimes(keras.callbacks.Callback):
    """Wall and CPU time at the end of every training batch. Not async-safe on purpose: Keras then
    converts each step's logs to numbers first, which waits for the device to finish the step."""

    def __init__(self):
        super().__init__()
        self.marks = []
        self.begin = None

    def on_train_begin(self, logs=None):
        self.begin = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        self.marks.append((time.perf_counter(), cpu_seconds()))


def timed_fit(model, dataset, batch, warmup, steps):
    times = StepTimes()
    model.fit(dataset, epochs=1, steps_per_epoch=warmup + steps, callbacks=[times], verbose=0, shuffle=False)
    (wall0, cpu0), (wall1, cpu1) = times.marks[warmup - 1], times.marks[-1]
    images = steps * batch
    return {"images_per_s": images / (wall1 - wall0), "seconds": wall1 - wall0, "steps": steps,
            "warmup_steps": warmup, "images": images, "cpu_s_per_image": (cpu1 - cpu0) / images,
            "cores_busy": (cpu1 - cpu0) / (wall1 - wall0),
            "first_step_seconds": times.marks[0][0] - times.begin}  # tracing / compilation included


def measure_pipeline(flag_values, source, augment, warmup, batches):
    batch = flag_values.batch_size
    dataset = pretrain_dataset(source, augment, batch, flag_values.seed, 0, flag_values.augment_on)
    iterator = iter(dataset)
    for _ in range(warmup):  # tracing, thread pools, tf.data's autotuning
        next(iterator)
    wall0, cpu0 = time.perf_counter(), cpu_seconds()
    for _ in range(batches):
        next(iterator)
    wall1, cpu1 = time.perf_counter(), cpu_seconds()
    images = batches * batch
    return {"images_per_s": images / (wall1 - wall0), "seconds": wall1 - wall0, "batches": batches,
            "images": images, "cpu_s_per_image": (cpu1 - cpu0) / images, "cores_busy": (cpu1 - cpu0) / (wall1 - wall0)}


# --- FLOPs and the matmul peak ----------------------------------------------------------------------------

def _layer_macs(layer, output_shape):
    """Multiply-accumulates of one call of `layer` on one example, from its output shape and kernel."""
    shape = list(output_shape)[1:]
    if isinstance(layer, keras.layers.Dense):
        positions = shape[:-1]
        kernel = int(np.prod(layer.kernel.shape))
    else:
        positions = shape[1:] if getattr(layer, "data_format", "channels_last") == "channels_first" else shape[:-1]
        if isinstance(layer, keras.layers.SeparableConv2D):
            kernel = int(np.prod(layer.depthwise_kernel.shape)) + int(np.prod(layer.pointwise_kernel.shape))
        else:  # Conv2D (kh, kw, cin / groups, cout); DepthwiseConv2D (kh, kw, cin, multiplier)
            kernel = int(np.prod(layer.kernel.shape))
    return int(np.prod(positions)) * kernel


def forward_macs(model, input_shape):
    """{"total": MACs of one forward pass of one image, "by_type": {...}, "layers": calls counted}.

    Runs `model` eagerly on one blank image with the `call` of Conv2D, DepthwiseConv2D,
    SeparableConv2D and Dense wrapped to record each call's output shape (any model, nested ones
    and dynamic input sizes included); BN, activations, pooling and additions are not counted."""
    records = []
    saved = {cls: cls.__dict__.get("call") for cls in _COUNTED_LAYERS}

    def recording(original):
        def call(self, inputs, *args, **kwargs):
            outputs = original(self, inputs, *args, **kwargs)
            records.append((self, tuple(outputs.shape)))
            return outputs
        return call

    try:
        for cls in _COUNTED_LAYERS:
            cls.call = recording(cls.call)
        model(np.zeros((1, *input_shape, 3), np.float32), training=False)
    finally:
        for cls, original in saved.items():
            if original is None:
                del cls.call
            else:
                cls.call = original
    by_type = {}
    for layer, shape in records:
        name = type(layer).__name__
        by_type[name] = by_type.get(name, 0) + _layer_macs(layer, shape)
    return {"total": sum(by_type.values()), "by_type": by_type, "layers": len(records)}


def matmul_peak(device, dtype, max_size, seconds):
    """FLOP/s of square matmuls in `dtype` on `device`: the size doubles from 256 until one matmul
    takes 0.1 s or reaches `max_size`; then chunks of ~0.2 s are timed (each ends by reading one
    element, which waits for the device) for `seconds`; the median chunk's rate."""
    dtype = tf.as_dtype(dtype)

    def timed(a, b, count):
        start = time.perf_counter()
        for _ in range(count):
            c = tf.matmul(a, b)
        c[0, 0].numpy()
        return time.perf_counter() - start

    with tf.device(device):
        size = 256
        while True:
            a = tf.cast(tf.random.uniform((size, size), seed=1), dtype)
            b = tf.cast(tf.random.uniform((size, size), seed=2), dtype)
            timed(a, b, 1)  # warm-up: library initialisation, kernel selection
            one = timed(a, b, 1)
            if one >= 0.1 or size * 2 > max_size:
                break
            size *= 2
        per_chunk = max(1, int(0.2 / max(one, 1e-6)))
        rates, total = [], 0.0
        while total < seconds or len(rates) < 3:
            elapsed = timed(a, b, per_chunk)
            total += elapsed
            rates.append(2.0 * size ** 3 * per_chunk / elapsed)
    return {"flops_per_s": float(np.median(rates)), "best_flops_per_s": float(max(rates)), "size": size,
            "dtype": dtype.name, "device": device, "chunks": len(rates)}


# --- the job ----------------------------------------------------------------------------------------------

def run(job):
    hide_gpus = job.get("hide_accelerators", False)
    if hide_gpus:  # a pipeline-only process: tf.data runs on the host; no device context, no device memory
        tf.config.set_visible_devices([], "GPU")
    flag_values = parse_cli_flags(job["cli_flags"])
    kinds = job["kinds"]
    needs_model = any(kind in ("step", "full") for kind in kinds)
    # Before TensorFlow runs anything else: a multi-worker strategy configures collective ops at start-up.
    devices = distribution.setup(flag_values) if needs_model else None
    result = {"machine": machine_info(), "pid": os.getpid()}
    input_size, crop_size = image_sizes(flag_values)
    augment = augment_config(flag_values, crop_size, "pretrain")
    with open(job["paths_file"], encoding="utf-8") as f:
        paths = [line.rstrip("\n") for line in f if line.strip()]
    source = image_source(flag_values, paths, input_size)
    result["augment"] = {"crop_size": list(crop_size), "blur": bool(augment.blur), "input_size": list(input_size)}
    worker_devices = list(devices.strategy.extended.worker_devices) if devices else ["/device:CPU:0"]
    if devices is not None:
        result["distribution"] = {"describe": devices.describe(), "replicas": devices.num_replicas,
                                  "jit_compile": bool(devices.jit_compile), "precision": devices.precision,
                                  "compute_dtype": keras.mixed_precision.global_policy().compute_dtype,
                                  "sync_bn": bool(devices.sync_bn), "devices": worker_devices}
    model = None
    for kind in kinds:
        start = time.perf_counter()
        if kind == "pipeline":
            figures = measure_pipeline(flag_values, source, augment, job["pipeline_warmup"], job["pipeline_batches"])
        else:
            if model is None:
                model = build_model(flag_values, devices, crop_size, augment, len(source))
                result["params"] = int(model.encoder.count_params() + model.projection_head.count_params())
                result["encoder"] = describe_encoder(model.encoder) or {"name": model.encoder.name}
            dataset = (synthetic_dataset(flag_values, devices, input_size, crop_size) if kind == "step"
                       else file_dataset(flag_values, devices, source, augment))
            figures = timed_fit(model, dataset, flag_values.batch_size, job["warmup_steps"], job["steps"])
        figures.update(memory_figures(worker_devices))
        figures["process_seconds"] = time.perf_counter() - start
        result[kind] = figures
    if model is not None:
        macs = forward_macs(model, crop_size)
        # 2 FLOPs per MAC; backward = 2 x forward (input and weight gradients); two views per image.
        result["flops"] = {"forward_macs_per_view": macs["total"], "by_layer_type": macs["by_type"],
                           "counted_calls": macs["layers"], "step_flops_per_image": 2 * 3 * 2 * macs["total"]}
    if "step" in kinds and job.get("matmul_seconds", 0) > 0:
        on_gpu = any("GPU" in d.upper() for d in worker_devices)
        max_size = job.get("matmul_size") or (8192 if on_gpu else 2048)
        result["matmul_peak"] = matmul_peak(worker_devices[0], result["distribution"]["compute_dtype"], max_size,
                                            job["matmul_seconds"])
    return result


def main():
    job_path, result_path = sys.argv[1], sys.argv[2]
    with open(job_path, encoding="utf-8") as f:
        job = json.load(f)
    try:
        result = run(job)
    except Exception as e:  # noqa: BLE001  (reported to the driver, which carries on with the others)
        result = {"error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()}
    with open(result_path + ".tmp", "w", encoding="utf-8") as f:
        json.dump(result, f, indent=1)
    os.replace(result_path + ".tmp", result_path)
    sys.stdout.flush()
    # os._exit: skip TensorFlow's slow (and on some GPU stacks crash-prone) interpreter teardown.
    os._exit(0 if "error" not in result else 1)


if __name__ == "__main__":
    main()

"""Where and how a training task computes: the tf.distribute strategy (--strategy), the Keras
precision policy (--precision), XLA (--jit_compile) and synchronised BatchNorm (--sync_bn).

`setup` must run before TensorFlow executes anything else in the process: MultiWorkerMirroredStrategy
configures collective ops, which TensorFlow allows only at start-up.
"""
import dataclasses
import json
import os

import keras
import tensorflow as tf

from simclr_tf.errors import UserError

from .console import say


@dataclasses.dataclass(frozen=True)
class Distribution:
    """The resolved hardware settings of one run."""

    strategy: object
    precision: str
    jit_compile: bool
    sync_bn: bool
    is_chief: bool
    worker_index: int
    num_workers: int

    @property
    def num_replicas(self):
        return self.strategy.num_replicas_in_sync

    @property
    def multi_worker(self):
        return self.num_workers > 1 or isinstance(self.strategy, tf.distribute.MultiWorkerMirroredStrategy)

    def scope(self):
        return self.strategy.scope()

    def distribute(self, dataset_fn):
        """The training dataset for `fit`. `dataset_fn(shard)` builds the batches of one input
        pipeline: shard None (one pipeline, global batches that Keras splits among the local
        replicas) or (pipeline index, number of pipelines, replicas of this pipeline) for a
        multi-worker job, where every worker reads only its own share of every global batch."""
        if not self.multi_worker:
            return dataset_fn(None)
        return self.strategy.distribute_datasets_from_function(
            lambda context: dataset_fn((context.input_pipeline_id, context.num_input_pipelines,
                                        self.num_replicas // context.num_input_pipelines)))

    def describe(self):
        devices = ", ".join(sorted({d.split("/")[-1] for d in self.strategy.extended.worker_devices}))
        worker = f", worker {self.worker_index + 1} of {self.num_workers}{' (chief)' if self.is_chief else ''}" \
            if self.num_workers > 1 else ""
        name = "MultiWorkerMirroredStrategy" if self.multi_worker else type(self.strategy).__name__
        return (f"{name} with {self.num_replicas} replica(s) ({devices}){worker}; precision "
                f"{self.precision}; XLA {'on' if self.jit_compile else 'off'}; "
                f"BatchNorm {'synchronised' if self.sync_bn else 'per replica' if self.num_replicas > 1 else 'plain'}")


def _gpus():
    return tf.config.list_physical_devices("GPU")


def _cluster():
    """(task type, task index, number of workers) from TF_CONFIG, or (None, 0, 1) without it."""
    text = os.environ.get("TF_CONFIG")
    if not text:
        return None, 0, 1
    try:
        spec = json.loads(text)
        cluster, task = spec["cluster"], spec["task"]
        return task["type"], int(task["index"]), len(cluster.get("chief", [])) + len(cluster.get("worker", []))
    except (ValueError, KeyError, TypeError) as e:
        raise UserError(f"--strategy=multi_worker: TF_CONFIG is not valid JSON with 'cluster' and 'task' ({e}); see "
                        "the README, 'Running on several machines'.") from None


def _strategy(name):
    gpus = _gpus()
    if name == "auto":
        name = "mirrored" if len(gpus) > 1 else "one_device"
    if name == "one_device":
        return tf.distribute.OneDeviceStrategy("/gpu:0" if gpus else "/cpu:0")
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if not os.environ.get("TF_CONFIG"):
        raise UserError("--strategy=multi_worker needs the TF_CONFIG environment variable on every worker (README, "
                        "'Running on several machines').")
    return tf.distribute.MultiWorkerMirroredStrategy()


def setup(flag_values):
    """The run's Distribution from the flags; sets the global Keras precision policy. Call first."""
    strategy = _strategy(flag_values.strategy)
    task_type, index, workers = _cluster() if flag_values.strategy == "multi_worker" else (None, 0, 1)
    has_chief = task_type == "chief" or "chief" in json.loads(os.environ.get("TF_CONFIG", "{}")).get("cluster", {})
    is_chief = task_type == "chief" or (task_type in (None, "worker") and index == 0 and not has_chief)
    keras.mixed_precision.set_global_policy(flag_values.precision)
    on_gpu = bool(_gpus())
    jit = on_gpu if flag_values.jit_compile is None else bool(flag_values.jit_compile)
    replicas = strategy.num_replicas_in_sync
    sync_bn = replicas > 1 if flag_values.sync_bn is None else bool(flag_values.sync_bn)
    if flag_values.batch_size % replicas:
        raise UserError(f"--batch_size={flag_values.batch_size} (the global batch) must be a multiple of the "
                        f"{replicas} replicas of --strategy={flag_values.strategy}.")
    distribution = Distribution(strategy, flag_values.precision, jit, sync_bn, is_chief,
                                index if task_type != "worker" or not has_chief else index + 1, workers)
    say(f"Devices: {distribution.describe()}")
    return distribution

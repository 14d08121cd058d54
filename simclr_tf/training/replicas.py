"""The one replica-scaling rule of every trainer in simclr_tf.

Under a `tf.distribute` strategy each replica computes gradients of its own loss and the optimizer
SUMS them over replicas. So each replica's loss must be its SHARE of the global loss: the sum of its
weighted per-example losses divided by the global sum of weights (all replicas). Then the summed
gradient is exactly the gradient of the global weighted mean, as on one device with the global
batch, even when replicas hold different numbers of labelled pixels. Keras' metrics average the
replicas' logged values, so a trainer logs `share * num_replicas` (whose mean is the global loss).
"""
import tensorflow as tf


def num_replicas():
    """Replicas in sync under the current strategy (1 outside a strategy)."""
    return tf.distribute.get_strategy().num_replicas_in_sync


def global_mean_share(weighted_sum, weight_sum):
    """This replica's share of the global weighted mean: weighted_sum / (weight_sum over replicas).

    `weighted_sum` and `weight_sum` are this replica's scalars. A global weight of 0 (nothing
    labelled anywhere) gives 0, not NaN.
    """
    weight_sum = tf.stop_gradient(tf.cast(weight_sum, weighted_sum.dtype))
    context = tf.distribute.get_replica_context()
    if context is not None and context.num_replicas_in_sync > 1:
        weight_sum = context.all_reduce(tf.distribute.ReduceOp.SUM, weight_sum)
    return tf.math.divide_no_nan(weighted_sum, weight_sum)


def replica_logs(metrics):
    """What a train_step returns: {name: result} of its metrics. Under MultiWorkerMirroredStrategy
    Keras' fit averages the replicas' returns along their first axis (it expects batch-shaped
    values), so there each scalar is returned with one axis of length 1."""
    results = {m.name: m.result() for m in metrics}
    if isinstance(tf.distribute.get_strategy(), tf.distribute.MultiWorkerMirroredStrategy):
        results = {name: tf.reshape(value, [1]) for name, value in results.items()}
    return results


class BuiltBeforeFit:
    """Mixin for this project's `keras.Model` trainers, which are built (variables and optimizer
    slots) before `fit`, so a checkpoint can be restored into them.

    Keras' TensorFlow trainer peeks at the first batch in `fit` to build the model symbolically and,
    under a strategy, averages that batch over the replicas. For a model already built the peek is
    useless, and under MultiWorkerMirroredStrategy the average fails on batches that are tuples
    (views, or images and labels). Skipping it when everything is built is all this does.
    """

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        if self.built and self.optimizer is not None and self.optimizer.built:
            return
        super()._maybe_symbolic_build(iterator=iterator, data_batch=data_batch)

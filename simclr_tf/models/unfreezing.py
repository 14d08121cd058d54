"""Gradual unfreezing of a (pretrained) backbone while training.

Definitions:

- **Backbone layers** (`backbone_layers`): the encoder's layers that own weights training can
  change, in the order of the model's layer list (input side first), descending into nested
  models (the ``keras.applications`` model of an application encoder, ConvNeXt's Sequential
  stem ...). BatchNormalization counts (gamma and beta); layers with only statistics (the
  EfficientNet input ``Normalization``) or no weights at all (activations, pooling, padding, the
  input scaling, ``h``) do not. "The top K layers" are the last K of that list; K=None means all.
- **Frozen BatchNormalization** runs in inference mode: Keras 3 normalises with the moving
  statistics and leaves them unchanged when a BN layer is not trainable, even inside a training
  step (``training and self.trainable``).
- **Schedule** ``"EPOCH:K,EPOCH:K,..."``: EPOCH counts completed epochs, as Keras' 0-based epoch
  index, ``fit(initial_epoch=...)`` and the checkpoint's ``epoch`` do, so ``"5:20"`` makes the top
  20 layers trainable from the sixth epoch (printed "epoch 6/N") on; before the first entry,
  ``initial_k`` layers are trainable. EPOCH >= 1 and strictly increasing; K is an integer >= 0 or
  ``all``, and never decreases (this is unfreezing: a layer, once trainable, stays trainable).

What a trainer must do (see `GradualUnfreezing`): build its optimizer once on every variable that
will ever be trained (`build_optimizer_for_unfreezing`), before restoring a checkpoint and before
``fit``; apply gradients only to ``self.trainable_variables`` (a Keras 3 optimizer accepts any
subset of the variables it was built with; the others keep their slots untouched); and re-trace
its train function whenever the trainable set changes (the callback does it).

Optimiser state of a layer unfrozen late starts at zero. With LARS and momentum SGD that is a
gentle start (the momentum builds up). Adam / AdamW correct their moments for bias with the
optimizer's global step, not the variable's, so a layer unfrozen after many steps gets steps of
up to ~5x the learning rate for its first few hundred updates (measured: 2.5x, 5.2x, 3.6x, 1.7x
at its 1st, 10th, 50th, 300th update after 1000 frozen steps): prefer LARS / SGD, or lower the
learning rate around an unfreezing epoch.
"""

from __future__ import annotations

import operator

import keras

ALL = None


def _can_train(layer) -> bool:
    # `_trainable_variables` holds the variables created trainable whatever the layer's current
    # flag; the public `trainable_weights` is empty while a layer is frozen, so it cannot tell.
    return any(sub._trainable_variables for sub in layer._flatten_layers(include_self=True))


def _units(model: keras.Model):
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            yield from _units(layer)
        elif _can_train(layer):
            yield layer


def backbone_layers(encoder: keras.Model) -> list:
    """The encoder's trainable-weight layers, input side first (see the module docstring)."""
    return list(_units(encoder))


def _check_count(k, what="the number of trainable layers"):
    if k is None:
        return None
    try:
        if isinstance(k, bool):
            raise TypeError
        number = operator.index(k)
    except TypeError:
        raise ValueError(f"{what} must be an integer >= 0 or None (all), got {k!r}") from None
    if number < 0:
        raise ValueError(f"{what} must be an integer >= 0 or None (all), got {k!r}")
    return number


def set_trainable_top_layers(encoder: keras.Model, k) -> int:
    """Makes only the top ``k`` backbone layers trainable (``k`` None or >= their number: all).

    Everything else in the encoder becomes trainable first, so the result depends only on ``k``.
    Frozen BatchNormalization layers then run in inference mode. Returns the number of trainable
    backbone layers. Re-trace a train function after a change (`GradualUnfreezing` does).
    """
    k = _check_count(k)
    units = backbone_layers(encoder)
    first_trainable = 0 if k is None else max(0, len(units) - k)
    encoder.trainable = True  # propagates to every nested layer
    for index, layer in enumerate(units):
        layer.trainable = index >= first_trainable
    return len(units) - first_trainable


def _at_most(a, b) -> bool:
    """a <= b where None means "all" (infinity)."""
    return b is None or (a is not None and a <= b)


def _parse_entry(entry: str, text: str):
    epoch_text, colon, k_text = entry.partition(":")
    if not colon:
        raise ValueError(f"unfreeze schedule {text!r}: entry {entry!r} is not EPOCH:K")
    try:
        epoch = int(epoch_text.strip())
    except ValueError:
        raise ValueError(f"unfreeze schedule {text!r}: epoch {epoch_text.strip()!r} in {entry!r} "
                         "is not an integer") from None
    if epoch < 1:
        raise ValueError(f"unfreeze schedule {text!r}: epoch {epoch} in {entry!r} must be >= 1 (it "
                         "counts completed epochs; the first epoch uses the initial number of layers)")
    k_text = k_text.strip()
    if k_text.lower() == "all":
        return epoch, ALL
    try:
        k = int(k_text)
    except ValueError:
        raise ValueError(f"unfreeze schedule {text!r}: {k_text!r} in {entry!r} is neither an integer "
                         "nor 'all'") from None
    if k < 0:
        raise ValueError(f"unfreeze schedule {text!r}: the number of layers in {entry!r} must be >= 0")
    return epoch, k


def parse_unfreeze_schedule(text) -> list:
    """``"EPOCH:K,EPOCH:K,..."`` -> ``[(epoch, k), ...]`` sorted by epoch (k None for ``all``).

    Entries may come in any order; spaces are ignored; an empty string is an empty schedule.

    Raises:
      ValueError: malformed entry, epoch < 1, K < 0, a repeated epoch, or K decreasing over time.
    """
    if text is None:
        return []
    entries = [entry.strip() for entry in str(text).split(",") if entry.strip()]
    schedule = sorted((_parse_entry(entry, text) for entry in entries), key=lambda e: e[0])
    _check_order(schedule, str(text))
    return schedule


def _check_order(schedule, text):
    for (epoch_a, k_a), (epoch_b, k_b) in zip(schedule, schedule[1:]):
        if epoch_a == epoch_b:
            raise ValueError(f"unfreeze schedule {text!r}: epoch {epoch_a} appears twice")
        if not _at_most(k_a, k_b):
            raise ValueError(f"unfreeze schedule {text!r}: the number of trainable layers decreases "
                             f"from {_show(k_a)} at epoch {epoch_a} to {_show(k_b)} at epoch {epoch_b}")


def _show(k):
    return "all" if k is None else str(k)


def _normalise_schedule(schedule) -> list:
    if schedule is None or isinstance(schedule, str):
        return parse_unfreeze_schedule(schedule)
    entries = []
    for entry in schedule:
        epoch, k = entry
        epoch = _check_count(epoch, "a schedule epoch")
        if epoch < 1:
            raise ValueError(f"unfreeze schedule epochs must be >= 1, got {epoch}")
        entries.append((epoch, _check_count(k)))
    entries.sort(key=lambda e: e[0])
    _check_order(entries, repr(schedule))
    return entries


def check_schedule(initial_k, schedule) -> list:
    """Validates ``initial_k`` against ``schedule`` (a string or list); returns the sorted schedule.

    Raises:
      ValueError: a bad schedule, or a first entry with fewer layers than ``initial_k``.
    """
    initial_k = _check_count(initial_k, "the initial number of trainable layers")
    entries = _normalise_schedule(schedule)
    if entries and not _at_most(initial_k, entries[0][1]):
        raise ValueError(f"the unfreeze schedule starts with {_show(entries[0][1])} trainable layers "
                         f"at epoch {entries[0][0]}, fewer than the initial {_show(initial_k)}")
    return entries


def trainable_layers_at(epoch: int, initial_k, schedule) -> int | None:
    """The number of trainable backbone layers (None: all) for the 0-based ``epoch``.

    ``schedule`` is a string or a list of ``(epoch, k)``; the last entry whose epoch is <= ``epoch``
    wins, ``initial_k`` before the first.
    """
    k = initial_k
    for start, count in _normalise_schedule(schedule):
        if epoch >= start:
            k = count
    return k


def _trainable_flags(encoder):
    # Parents come before their children in `_flatten_layers`, so restoring the flags in this
    # order undoes the propagation of a parent's setter to its children.
    return [(layer, layer.trainable) for layer in encoder._flatten_layers(include_self=True)]


def trainable_variables_when_unfrozen(model: keras.Model, encoder: keras.Model) -> list:
    """``model.trainable_variables`` as they are with every backbone layer of ``encoder`` trainable.

    The order is the model's own, so a fresh model gives the same list: build the optimizer on it
    and a checkpoint's optimizer slots line up. The trainable flags are left as they were.
    """
    flags = _trainable_flags(encoder)
    try:
        set_trainable_top_layers(encoder, ALL)
        return list(model.trainable_variables)
    finally:
        for layer, flag in flags:
            layer.trainable = flag


def _optimizer_knows(optimizer, variables) -> bool:
    # Keras' own check, the one apply_gradients runs; an unbuilt optimizer knows no variable.
    try:
        optimizer._check_variables_are_known(variables)
    except ValueError:
        return False
    return True


def _known_to_some(optimizers, variables) -> bool:
    return all(any(_optimizer_knows(o, [v]) for o in optimizers) for v in variables)


def build_optimizer_for_unfreezing(model: keras.Model, encoder: keras.Model, optimizer=None) -> list:
    """Builds ``optimizer`` (default ``model.optimizer``) on every variable that unfreezing can train.

    Call it after ``compile`` and after the model's variables exist, before restoring a checkpoint
    and before ``fit`` (``fit`` would build the optimizer on the current trainable variables only).
    Returns the variables.

    Raises:
      ValueError: the optimizer is already built on fewer variables.
    """
    optimizer = model.optimizer if optimizer is None else optimizer
    variables = trainable_variables_when_unfrozen(model, encoder)
    if not optimizer.built:
        optimizer.build(variables)
    if not _optimizer_knows(optimizer, variables):
        raise ValueError(
            "the optimizer was built before build_optimizer_for_unfreezing and lacks slots for "
            "layers the unfreezing schedule will train; call it right after compile")
    return variables


class GradualUnfreezing(keras.callbacks.Callback):
    """Sets the trainable backbone layers at the start of every epoch from a schedule.

    At each epoch (including the first of a resumed ``fit(initial_epoch=E)``) the top
    `trainable_layers_at` (epoch, initial_k, schedule) layers are made trainable, and whenever
    that changes the trainer's train function is re-traced (``make_train_function(force=True)``:
    ``fit`` reads ``model.train_function`` anew for every step, and a traced function keeps the
    variables and BN modes it saw). The trainer's optimizer must have been built with
    `build_optimizer_for_unfreezing`; training stops at once with a ValueError otherwise.

    Args:
      encoder: the encoder inside the trained model.
      initial_k: trainable backbone layers before the first schedule entry (None: all, 0: none).
      schedule: ``"EPOCH:K,..."`` or a list of ``(epoch, k)``; see the module docstring.
      printer: called with a one-line message whenever the trainable set changes (None: silent).
      optimizers: the optimizers that update the model, together built on every variable
        (default: ``[model.optimizer]``; a trainer with a separate encoder optimizer passes both).
    """

    def __init__(self, encoder, initial_k=0, schedule=(), printer=None, optimizers=None):
        super().__init__()
        self.encoder = encoder
        self.initial_k = _check_count(initial_k, "the initial number of trainable layers")
        self.schedule = check_schedule(self.initial_k, schedule)
        self.printer = printer
        self.optimizers = None if optimizers is None else list(optimizers)
        self.current_k = None
        self._flags = None

    def on_train_begin(self, logs=None):
        self._flags = None  # every fit starts by applying its first epoch's set
        variables = trainable_variables_when_unfrozen(self.model, self.encoder)
        optimizers = self.optimizers or [self.model.optimizer]
        if not _known_to_some(optimizers, variables):
            raise ValueError(
                "GradualUnfreezing: the optimizer has no slots for the layers the schedule will "
                "unfreeze; call build_optimizer_for_unfreezing(model, encoder) after compile and "
                "before restoring a checkpoint or calling fit")

    def on_epoch_begin(self, epoch, logs=None):
        k = trainable_layers_at(epoch, self.initial_k, self.schedule)
        trainable = set_trainable_top_layers(self.encoder, k)
        flags = tuple(layer.trainable for layer in backbone_layers(self.encoder))
        self.current_k = k
        if flags == self._flags:
            return
        self.model.make_train_function(force=True)
        self._flags = flags
        if self.printer is not None:
            self.printer(f"epoch {epoch + 1}: the top {trainable} of {len(flags)} backbone layers "
                         "are trainable")

"""Every command-line flag of simclr-tf, in named groups.

Flags live here and only here. Tasks read them and pass plain values to the library
(`simclr_tf/` never reads flags). Validation that involves one flag is registered here; checks
that need files (lists, checkpoints) happen in the tasks.

Every flag belongs to exactly one group of `FLAG_GROUPS` (the `flag_group` blocks below). Each task
declares the groups it reads, and which of them define its results: a run folder's fingerprint is
built from those (tasks/run_folder.py), so a new flag in a group a task does not read never breaks
that task's resume, and a flag passed to a task that does not read it prints a warning.
"""
import contextlib
import re

from absl import flags

FLAG_GROUPS = {}


class _AutoBooleanParser(flags.BooleanParser):
    """A boolean that may also be 'auto' (None): --name, --noname, --name=true|false|auto."""

    def parse(self, argument):
        if isinstance(argument, str) and argument.lower() == "auto":
            return None
        return super().parse(argument)

    def flag_type(self):
        return "bool or auto"


def _define_auto_boolean(name, help_text):
    """A boolean flag whose default, None, means "decided by the run" (see its help)."""
    flags.DEFINE_flag(flags.Flag(_AutoBooleanParser(), None, name, None, help_text, None, True))


@contextlib.contextmanager
def flag_group(name):
    """Records the flags defined inside the block as the group `name` (in definition order)."""
    before = set(flags.FLAGS)
    yield
    FLAG_GROUPS[name] = tuple(n for n in flags.FLAGS if n not in before)


TASKS = ("pretrain", "classification", "segmentation", "evaluate", "predict", "linear_eval", "embed",
         "pseudo_labels", "export")
RESNETS = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152")
# keras.applications constructors usable as encoders (simclr_tf/models/applications.py; a test keeps
# the two lists equal). Spelled as in Keras, which keeps "ResNet50" apart from the project's "resnet50".
KERAS_APPLICATIONS = (
    "VGG16", "VGG19", "ResNet50", "ResNet101", "ResNet152", "ResNet50V2", "ResNet101V2", "ResNet152V2",
    "MobileNet", "MobileNetV2", "MobileNetV3Small", "MobileNetV3Large",
    *(f"EfficientNetB{i}" for i in range(8)),
    *(f"EfficientNetV2{v}" for v in ("B0", "B1", "B2", "B3", "S", "M", "L")),
    "ConvNeXtTiny", "ConvNeXtSmall", "ConvNeXtBase", "ConvNeXtLarge", "ConvNeXtXLarge",
    "DenseNet121", "DenseNet169", "DenseNet201", "Xception", "InceptionV3", "InceptionResNetV2")
BACKBONES = RESNETS + KERAS_APPLICATIONS
OPTIMIZERS = ("lars", "sgd", "adam", "adamw", "nadam")

# --- what to run ------------------------------------------------------------------------------------
with flag_group("task"):
    flags.DEFINE_enum("task", None, TASKS, "What to run.")

# --- starting over or resuming (never part of a fingerprint) ----------------------------------------
with flag_group("run_control"):
    flags.DEFINE_boolean("resume", True, "Resume an interrupted run from its last checkpoint; --resume=false starts over.")
    flags.DEFINE_boolean("overwrite", False, "--overwrite allows replacing the finished results of a different configuration.")

with flag_group("randomness"):
    flags.DEFINE_integer("seed", 0, "Random seed: data order, augmentations, initial weights, subsets.")

# --- data -------------------------------------------------------------------------------------------
with flag_group("train_list"):
    flags.DEFINE_string("train_file_path", None, "Training list: one image per line, or 'path,label' / "
                        "'path,labelmap'; or a folder of images (labelled uses: one subfolder per class; README, "
                        "'Your own images').")

with flag_group("val_list"):
    flags.DEFINE_string("val_file_path", None, "Validation list ('path,label' or 'path,labelmap'), or a folder of "
                        "class folders.")

with flag_group("test_list"):
    flags.DEFINE_string("test_file_path", None, "Images to predict or embed: a list (one per line, optionally "
                        "'path,label') or a folder (every image under it).")

with flag_group("image_size"):
    flags.DEFINE_string("input_size", "32 32", "'H W' (or one number for square): images are resized to this when read.")
    flags.DEFINE_string("crop_size", None, "'H W' the random crop-and-resize outputs, what the network sees "
                        "(default: the input size).")

with flag_group("decoding"):
    flags.DEFINE_integer("max_image_pixels", 89_478_485, "Largest image (width x height) decoded; bigger files are "
                         "skipped as undecodable (decompression bombs). The default is Pillow's limit.")

with flag_group("write_list"):
    flags.DEFINE_string("write_list", None, "Write the list each list flag became (a folder's images, or a list "
                        "normalised) to this file (.val/.knn_train before the extension for the second lists), so "
                        "the run can be frozen and reproduced (README, 'Your own images').")

with flag_group("cifar10"):
    flags.DEFINE_boolean("cifar10", False, "Use CIFAR-10 instead of file lists (Keras' loader, or --cifar10_dir).")
    flags.DEFINE_string("cifar10_dir", None, "Local copy of CIFAR-10 (the python version: data_batch_1..5, test_batch).")

with flag_group("classes"):
    flags.DEFINE_integer("num_classes", None, "Number of classes (classification; segmentation: including background).")

# --- where results go (and, for fine-tuning, where the encoder comes from) --------------------------
with flag_group("pretrain_folder"):
    flags.DEFINE_string("pretrain_save_path", "logs/pretrain", "Folder of the pretraining run (encoder.keras, ...).")

with flag_group("finetune_folder"):
    flags.DEFINE_string("finetune_save_path", "logs/finetune", "Folder of the fine-tuning run (model.keras, ...).")

with flag_group("output_folder"):
    flags.DEFINE_string("output_path", "logs/output", "Folder for predictions and embeddings.")

# --- speed and hardware: never part of a fingerprint ----------------------------------------------
with flag_group("performance"):
    flags.DEFINE_boolean("cache", False, "Decode every image once and keep it in memory (small data sets).")
    flags.DEFINE_enum("strategy", "auto", ("auto", "one_device", "mirrored", "multi_worker"),
                      "tf.distribute strategy: 'auto' is mirrored when more than one GPU is visible, else one device; "
                      "multi_worker reads TF_CONFIG (README, 'Running on several machines').")
    _define_auto_boolean("sync_bn", "Synchronised BatchNorm over all replicas (default auto: on when the strategy has "
                         "more than one replica).")
    flags.DEFINE_enum("augment_on", "host", ("host", "device"), "Where pretraining views are made: 'host' (tf.data "
                      "on the CPU) or 'device' (in the training step on the accelerator; the host only decodes); "
                      "the same seeds give the same views either way.")
    _define_auto_boolean("jit_compile", "Compile training steps with XLA (default auto: on when training on a GPU, off "
                         "on CPU, where it measured slower).")

# --- numerics: part of the fingerprint of every training run ----------------------------------------
with flag_group("numerics"):
    flags.DEFINE_enum("precision", "float32", ("float32", "mixed_bfloat16", "mixed_float16"),
                      "Keras mixed-precision policy; saved models are float32 whatever it is (README, 'Speed').")

# --- augmentations: every task that trains reads the crop and flip ----------------------------------
with flag_group("augment_crop_flip"):
    flags.DEFINE_boolean("crop", True, "Random crop-and-resize (area 0.08-1, aspect 3/4-4/3).")
    flags.DEFINE_float("crop_prob", 1.0, "Probability of the random crop (otherwise the whole image is resized).")
    flags.DEFINE_float("crop_area_min", 0.08, "Smallest crop area as a fraction of the image.")
    flags.DEFINE_boolean("flip", True, "Random horizontal flip.")
    flags.DEFINE_float("flip_prob", 0.5, "Probability of the flip.")

# --- pretraining and segmentation -------------------------------------------------------------------
with flag_group("augment_colour_jitter"):
    flags.DEFINE_boolean("jitter", True, "Colour jitter (brightness, contrast, saturation, hue in random order).")
    flags.DEFINE_float("jitter_prob", 0.8, "Probability of the colour jitter.")
    flags.DEFINE_float("strength", 1.0, "Colour-jitter strength s (0.5 is the CIFAR-10 recipe).")

with flag_group("augment_rotation"):
    flags.DEFINE_boolean("rotate", False, "Random rotation.")
    flags.DEFINE_float("rotate_prob", 0.5, "Probability of the rotation.")
    flags.DEFINE_float("rotate_degrees", 30.0, "Largest rotation angle in degrees (uniform in [-deg, deg]).")

# --- pretraining only -------------------------------------------------------------------------------
with flag_group("augment_pretrain_only"):
    flags.DEFINE_boolean("colordrop", True, "Random conversion to greyscale.")
    flags.DEFINE_float("colordrop_prob", 0.2, "Probability of the colour drop.")
    flags.DEFINE_boolean("blur", None, "Gaussian blur (default: on when the crop side is above 64 px, off at or below).")
    flags.DEFINE_float("blur_prob", 0.5, "Probability of the blur.")
    flags.DEFINE_float("blur_sigma_min", 0.1, "Smallest blur sigma (drawn uniformly per image).")
    flags.DEFINE_float("blur_sigma_max", 2.0, "Largest blur sigma.")
    flags.DEFINE_boolean("noise", False, "Additive Gaussian noise.")
    flags.DEFINE_float("noise_prob", 0.5, "Probability of the noise.")
    flags.DEFINE_float("noise_std", 0.05, "Standard deviation of the noise (images are in [0, 1]).")
    flags.DEFINE_boolean("cutout", False, "Cutout: erase a random square.")
    flags.DEFINE_float("cutout_prob", 0.5, "Probability of the cutout.")
    flags.DEFINE_float("cutout_fraction", 0.25, "Side of the erased square as a fraction of the image side.")

# --- model ------------------------------------------------------------------------------------------
with flag_group("encoder"):
    flags.DEFINE_enum("backbone", "resnet18", BACKBONES, "Encoder architecture: the project's ResNets (lower case) "
                      "or a keras.applications model (spelled as in Keras, e.g. VGG16, ResNet50, MobileNetV2).")
    flags.DEFINE_string("backbone_weights", "none", "keras.applications backbones: 'none' (random init), 'imagenet' "
                        "(Keras' download) or the path of a local no-top weights file.")
    flags.DEFINE_integer("width_multiplier", 1, "ResNet width multiplier (ResNet-50 x2: --width_multiplier=2).")
    flags.DEFINE_boolean("depthwise", False, "Bottleneck ResNets (resnet50 and deeper): depthwise 3x3 convolutions in "
                         "the bottleneck (far fewer parameters).")
    flags.DEFINE_boolean("small_stem", None, "ResNets: 3x3 stride-1 stem without max-pool (default: when the crop side "
                         "<= 32).")

with flag_group("unfreezing"):
    flags.DEFINE_integer("num_unfrozen_layers", None, "Pretraining: train only the top K layers of the backbone "
                         "(the rest frozen, BatchNorm in inference mode; default: all).")
    flags.DEFINE_string("unfreeze_schedule", None, "Pretraining: 'EPOCH:K,EPOCH:K,...' unfreezes the top K layers "
                        "after EPOCH completed epochs (K an integer or 'all', never decreasing).")

with flag_group("projection_head"):
    flags.DEFINE_integer("proj_layers", 2, "Layers of the projection head (paper v1: 2, official code: 3).")
    flags.DEFINE_integer("proj_dim", 128, "Output size of the projection head.")

# --- optimisation -----------------------------------------------------------------------------------
with flag_group("batch"):
    flags.DEFINE_integer("batch_size", 256, "Images per batch (each gives two views in pretraining).")

with flag_group("schedule"):
    flags.DEFINE_integer("num_epochs", 100, "Training epochs.")
    flags.DEFINE_float("learning_rate", None, "Base learning rate, scaled by --lr_scaling (default: pretraining "
                       "0.075 x sqrt(batch) for LARS/SGD, the paper's small-batch recipe; fine-tuning 0.1 x batch/256 for "
                       "SGD/LARS; Adam/AdamW 1e-3 unscaled; README, 'Fine-tuning defaults').")
    flags.DEFINE_enum("lr_scaling", None, ("linear", "sqrt"), "Learning rate = base x batch/256 or base x sqrt(batch) "
                      "(default: sqrt for pretraining, linear for fine-tuning; Adam, AdamW and NAdam rates are used as "
                      "given unless this is set).")
    flags.DEFINE_enum("optimizer", None, OPTIMIZERS, "Optimiser (default: lars for pretraining, Nesterov SGD for "
                      "classification fine-tuning, adam for segmentation).")
    flags.DEFINE_float("weight_decay", None, "Weight decay, never applied to BN parameters and biases (default: 1e-6 "
                       "pretraining, 0 fine-tuning).")
    flags.DEFINE_float("momentum", 0.9, "Momentum (LARS, SGD).")
    flags.DEFINE_integer("warmup_epochs", None, "Linear warmup epochs before the cosine decay (default: pretraining "
                         "10, or 10% of the run when that is shorter; fine-tuning 0).")
    flags.DEFINE_integer("warmup_steps", None, "Linear warmup in steps (overrides --warmup_epochs; the original CLI used 1000).")

with flag_group("contrastive_loss"):
    flags.DEFINE_enum("loss", "nt_xent", ("nt_xent", "dcl", "dclw"), "Contrastive loss: NT-Xent, or the decoupled "
                      "loss (DCL: the positive pair left out of the denominator; DCLW: with its vMF weighting).")
    flags.DEFINE_float("temperature", 0.2, "NT-Xent temperature (0.1 ImageNet, 0.5 long CIFAR-10 runs, 0.2 small batches).")

# --- fine-tuning ------------------------------------------------------------------------------------
with flag_group("finetune"):
    flags.DEFINE_boolean("freeze", False, "--freeze=true freezes the encoder (linear evaluation protocol): only the head trains.")
    flags.DEFINE_float("encoder_lr_multiplier", 1.0, "Encoder learning rate = this x the head's (fine-tuning).")
    flags.DEFINE_float("train_fraction", 1.0, "Train on this fraction of the labelled list: stratified by class for "
                       "classification, a random subset of images for segmentation (same subset for the same --seed).")

with flag_group("classification_head"):
    flags.DEFINE_enum("head", "linear", ("linear", "mlp"), "Classification head: linear, or an MLP with a ReLU.")

with flag_group("segmentation_loss"):
    flags.DEFINE_enum("class_weights", "none", ("none", "auto"), "Segmentation: 'auto' weights each class's pixels "
                      "by median-frequency balancing (README, 'Segmentation training').")

# --- linear evaluation and embeddings ---------------------------------------------------------------
with flag_group("probes"):
    flags.DEFINE_string("train_fractions", "1.0 0.2 0.05", "linear_eval: label fractions to probe, space separated.")
    flags.DEFINE_integer("repeats", 3, "linear_eval: subsets drawn per fraction (mean and standard deviation).")
    flags.DEFINE_string("encoders", None, "linear_eval: comma-separated encoder .keras files or folders (a pretraining "
                        "folder gives its snapshots and encoder.keras): h of each is probed, written as "
                        "linear_eval_curve.json and a plot against pretraining epoch into --pretrain_save_path.")

with flag_group("feature_layer"):
    flags.DEFINE_string("feature_layer", "h", "linear_eval/embed: 'h' (encoder output) or 'proj1', 'proj2', ... "
                        "(output of projection-head layer k); linear_eval also 'all' (h and every head layer).")

# --- kNN monitor during pretraining -----------------------------------------------------------------
with flag_group("export"):
    flags.DEFINE_enum("export_model", "finetuned", ("finetuned", "encoder"), "export: the fine-tuned model.keras of "
                      "--finetune_save_path, or the pretrained encoder.keras of --pretrain_save_path.")
    flags.DEFINE_enum("export_format", "saved_model", ("saved_model", "tflite", "tflite_int8"), "export: a SavedModel, "
                      "and with tflite / tflite_int8 also a float32 / int8 TFLite file (README, 'Export for serving').")
    flags.DEFINE_string("calibration_file_path", None, "export --export_format=tflite_int8: images (a list) that set "
                        "the int8 ranges; a few hundred like those the model will see.")

with flag_group("guided_batches"):
    flags.DEFINE_string("pseudo_label_file", None, "Pretraining: a 'path,cluster' list (from --task=pseudo_labels) "
                        "covering the training list: every batch then holds images of distinct clusters (G-SimCLR).")

with flag_group("pseudo_labels"):
    flags.DEFINE_enum("pseudo_label_source", "autoencoder", ("autoencoder", "encoder"), "pseudo_labels: cluster the "
                      "latent vectors of a denoising autoencoder trained on --train_file_path, or the h of the encoder "
                      "in --pretrain_save_path.")
    flags.DEFINE_integer("num_clusters", 100, "pseudo_labels: number of k-means clusters (pseudo-labels).")

with flag_group("snapshots"):
    flags.DEFINE_integer("save_every", 0, "Pretraining: also keep snapshots/encoder_epoch_N.keras every N epochs (0: "
                         "none), e.g. for linear_eval's accuracy against pretraining epoch.")

with flag_group("diagnostics"):
    flags.DEFINE_integer("diagnostics_every", 1, "Pretraining: log z_std, alignment, uniformity and the effective rank "
                         "of h every N epochs (0: off; README, 'Is pretraining learning?').")
    flags.DEFINE_integer("diagnostics_images", 256, "Training images the diagnostics are measured on.")

with flag_group("knn_monitor"):
    flags.DEFINE_string("knn_train_file_path", None, "Labelled 'path,label' list (or folder of class folders) of kNN "
                        "reference images (default: the labels found in --train_file_path).")
    flags.DEFINE_integer("knn_every", 1, "Report weighted kNN accuracy on --val_file_path every N epochs (0: off).")
    flags.DEFINE_integer("knn_k", 20, "Neighbours of the kNN monitor.")
    flags.DEFINE_float("knn_temperature", 0.1, "Temperature of the kNN monitor's similarity weights.")

# 'H W', 'H,W', 'HxW' or a single side 'S'; a separator must be followed by a second number.
_SIZE = re.compile(r"^\s*(\d+)(?:(?:\s*[x,]\s*|\s+)(\d+))?\s*$", re.ASCII)
# Image sides outside this range are typos, not sizes a network is trained at (a 4096 px side is
# already 200 MB per float32 view).
MIN_IMAGE_SIDE, MAX_IMAGE_SIDE = 8, 4096


def parse_size(text, flag_name):
    """'H W', 'H,W', 'HxW' or 'S' -> (H, W); raises ValueError with a readable message."""
    match = _SIZE.match(text)
    if not match:
        raise ValueError(f"--{flag_name}={text!r}: expected 'H W' with two positive integers (or one for a square)")
    height = int(match.group(1))
    width = int(match.group(2)) if match.group(2) is not None else height
    if min(height, width) < MIN_IMAGE_SIDE or max(height, width) > MAX_IMAGE_SIDE:
        raise ValueError(f"--{flag_name}={text!r}: expected 'H W' with two integers from {MIN_IMAGE_SIDE} to "
                         f"{MAX_IMAGE_SIDE}")
    return height, width


def parse_fractions(text):
    """'1.0 0.2 0.05' -> [1.0, 0.2, 0.05]; raises ValueError."""
    values = [float(v) for v in text.replace(",", " ").split()]
    if not values or not all(0.0 < v <= 1.0 for v in values):
        raise ValueError(text)
    return values


def _valid_fractions(text):
    try:
        parse_fractions(text)
        return True
    except ValueError:
        return False


def _validates_size(flag_name):
    def check(value):
        if value is None:
            return True
        try:
            parse_size(value, flag_name)
        except ValueError as e:
            raise flags.ValidationError(str(e)) from None
        return True
    flags.register_validator(flag_name, check, message=f"--{flag_name} must be 'H W'")


def _register_validators():
    _validates_size("input_size")
    _validates_size("crop_size")
    positive = ("batch_size", "num_epochs", "width_multiplier", "proj_layers", "proj_dim")
    for name in positive:
        flags.register_validator(name, lambda v: v is None or v >= 1, message=f"--{name} must be at least 1")
    for name in ("warmup_epochs", "warmup_steps"):
        flags.register_validator(name, lambda v: v is None or v >= 0, message=f"--{name} must be >= 0")
    for name in ("crop_prob", "flip_prob", "jitter_prob", "colordrop_prob", "blur_prob", "noise_prob",
                 "rotate_prob", "cutout_prob"):
        flags.register_validator(name, lambda v: 0.0 <= v <= 1.0, message=f"--{name} must be in [0, 1]")
    flags.register_validator("crop_area_min", lambda v: 0.0 < v <= 1.0, message="--crop_area_min must be in (0, 1]")
    flags.register_validator("cutout_fraction", lambda v: 0.0 < v <= 1.0, message="--cutout_fraction must be in (0, 1]")
    flags.register_validator("temperature", lambda v: v > 0, message="--temperature must be positive")
    flags.register_validator("strength", lambda v: v >= 0, message="--strength must be >= 0")
    flags.register_validator("blur_sigma_min", lambda v: v > 0, message="--blur_sigma_min must be positive")
    flags.register_multi_flags_validator(
        ["blur_sigma_min", "blur_sigma_max"], lambda d: d["blur_sigma_max"] >= d["blur_sigma_min"],
        message="--blur_sigma_max must be >= --blur_sigma_min")
    flags.register_validator("noise_std", lambda v: v >= 0, message="--noise_std must be >= 0")
    flags.register_validator("learning_rate", lambda v: v is None or v > 0, message="--learning_rate must be positive")
    flags.register_validator("weight_decay", lambda v: v is None or v >= 0, message="--weight_decay must be >= 0")
    flags.register_validator("train_fraction", lambda v: 0.0 < v <= 1.0, message="--train_fraction must be in (0, 1]")
    flags.register_validator("train_fractions", _valid_fractions,
                             message="--train_fractions must be numbers in (0, 1] separated by spaces")
    flags.register_validator("encoder_lr_multiplier", lambda v: v >= 0, message="--encoder_lr_multiplier must be >= 0")
    flags.register_validator("repeats", lambda v: v >= 1, message="--repeats must be at least 1")
    flags.register_validator("diagnostics_every", lambda v: v >= 0, message="--diagnostics_every must be >= 0")
    flags.register_validator("diagnostics_images", lambda v: v >= 2, message="--diagnostics_images must be at least 2")
    flags.register_validator("num_clusters", lambda v: v >= 2, message="--num_clusters must be at least 2")
    flags.register_validator("save_every", lambda v: v >= 0, message="--save_every must be >= 0")
    flags.register_validator("knn_every", lambda v: v >= 0, message="--knn_every must be >= 0")
    flags.register_validator("knn_k", lambda v: v >= 1, message="--knn_k must be at least 1")
    flags.register_validator("num_classes", lambda v: v is None or v >= 2, message="--num_classes must be at least 2")
    flags.register_validator("num_unfrozen_layers", lambda v: v is None or v >= 0,
                             message="--num_unfrozen_layers must be >= 0")
    flags.register_validator("max_image_pixels", lambda v: v >= 64, message="--max_image_pixels must be at least 64")


_register_validators()
FLAGS = flags.FLAGS

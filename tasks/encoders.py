"""The encoder a task builds from the --backbone flags: the project's ResNets or a keras.applications
model (with --backbone_weights), as a plain (random or ImageNet-initialised) encoder."""
from simclr_tf.errors import UserError
from simclr_tf.models import applications
from simclr_tf.models.resnet import BACKBONES as RESNETS, build_resnet

from .flag_use import given

# Flags that only mean something for one kind of backbone.
_RESNET_ONLY = ("width_multiplier", "depthwise", "small_stem")


def is_resnet(flag_values):
    """True for the project's own ResNets, False for keras.applications backbones."""
    return flag_values.backbone in RESNETS


def build_encoder(flag_values, crop_size, synchronized_bn=False):
    """The --backbone encoder (image in [0, 1] -> h) for images of `crop_size`; UserError for flag
    combinations that cannot be built (a flag of the other kind of backbone, an image too small for
    an application, ImageNet weights without network, ...)."""
    if is_resnet(flag_values):
        if flag_values.backbone_weights not in (None, "", "none"):
            raise UserError(f"--backbone_weights={flag_values.backbone_weights} is for keras.applications "
                            f"backbones; --backbone={flag_values.backbone} starts from random weights (or pretrain "
                            "it with --task=pretrain).")
        try:
            return build_resnet(flag_values.backbone, width_multiplier=flag_values.width_multiplier,
                                small_stem=flag_values.small_stem, image_size=crop_size,
                                synchronized_bn=synchronized_bn, depthwise=flag_values.depthwise)
        except ValueError as e:
            raise UserError(f"--backbone={flag_values.backbone} --depthwise: {e}") from None
    ignored = [f"--{name}" for name in _RESNET_ONLY if given(flag_values, name)]
    if ignored:
        raise UserError(f"{', '.join(ignored)} only apply to the project's ResNets, not to --backbone="
                        f"{flag_values.backbone} (a keras.applications model).")
    try:
        return applications.build_application_encoder(flag_values.backbone, weights=flag_values.backbone_weights,
                                                      image_size=crop_size)
    except ValueError as e:  # BackboneWeightsError is a UserError too and passes through unchanged
        if isinstance(e, UserError):
            raise
        raise UserError(f"--backbone={flag_values.backbone}: {e}") from None

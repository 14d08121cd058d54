"""The classifier that classification fine-tuning trains and saves: encoder + classification head."""
import keras
from keras import layers

from simclr_tf.models.heads import build_classification_head
from simclr_tf.models.resnet import feature_dim


def build_classifier(encoder, num_classes, crop_size, head="linear", freeze=False):
    """Functional model: image [H, W, 3] in [0, 1] -> float32 logits [num_classes].

    With `freeze` (the linear evaluation protocol) the encoder's weights are not trainable AND it is
    called with training=False, so its BatchNorm layers normalise with their moving statistics and
    never update them: the features the head sees are exactly the pretrained encoder's.
    """
    encoder.trainable = not freeze
    images = keras.Input(shape=(*crop_size, 3), name="image")
    h = encoder(images, training=False) if freeze else encoder(images)
    logits = build_classification_head(feature_dim(encoder), num_classes, kind=head)(h)
    return keras.Model(images, logits, name="classifier")


def with_softmax(classifier):
    """The exported model: the same layers with a softmax on top (image -> class probabilities)."""
    probabilities = layers.Softmax(name="probabilities", dtype="float32")(classifier.outputs[0])
    return keras.Model(classifier.inputs[0], probabilities, name="classifier")

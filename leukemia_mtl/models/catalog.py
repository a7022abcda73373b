"""The paper's three backbones as facts: names, Keras constructors, weight files, smallest inputs.

Settings are checked against this table (config.check) without importing the code that builds
models, fetches weights or reads object storage.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Backbone:
    name: str
    application: str  # constructor in keras.applications
    module: str  # keras.applications submodule with its preprocess_input
    weights_file: str  # Keras' own file name for the ImageNet weights without the top
    min_size: int
    # preprocess_input of all three is Keras' "tf" mode, x / 127.5 - 1: a Rescaling layer
    # (tests compare it with the module's own preprocess_input)
    rescale: tuple[float, float] = (1 / 127.5, -1.0)


BACKBONES: dict[str, Backbone] = {
    "InceptionV3": Backbone("InceptionV3", "InceptionV3", "inception_v3",
                            "inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5", 75),
    "Xception": Backbone("Xception", "Xception", "xception",
                         "xception_weights_tf_dim_ordering_tf_kernels_notop.h5", 71),
    "InceptionResNetV2": Backbone("InceptionResNetV2", "InceptionResNetV2", "inception_resnet_v2",
                                  "inception_resnet_v2_weights_tf_dim_ordering_tf_kernels_notop.h5", 75),
}

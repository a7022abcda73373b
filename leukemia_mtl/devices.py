"""Where training runs: the distribution strategy and precision for the devices TensorFlow sees."""

from __future__ import annotations


def devices_for_training(mixed_precision: str):
    """(distribution strategy, description): MirroredStrategy over every visible GPU when there is
    more than one, else OneDeviceStrategy on the GPU or the CPU; mixed float16 on GPUs ("auto"),
    or as told.

    Why never Keras' default strategy: only under an explicit strategy does `fit` build the
    optimizer's and metrics' variables before tracing. Without one they are created inside the
    first trace, and TensorFlow traces the training step a second time without them (measured by
    bench/graph_build.py; the figures are in BENCHMARKS.md). The explicit
    strategy also prefetches batches to the device.
    """
    import keras
    import tensorflow as tf

    if mixed_precision not in ("auto", "on", "off"):
        raise ValueError(f"train.mixed_precision must be auto, on or off, got {mixed_precision!r}")
    gpus = tf.config.list_physical_devices("GPU")
    mixed = mixed_precision == "on" or (mixed_precision == "auto" and bool(gpus))
    keras.mixed_precision.set_global_policy("mixed_float16" if mixed else "float32")
    if len(gpus) > 1:
        strategy = tf.distribute.MirroredStrategy()
    else:
        strategy = tf.distribute.OneDeviceStrategy("/gpu:0" if gpus else "/cpu:0")
    where = f"{len(gpus)} GPU(s)" if gpus else "CPU"
    return strategy, f"{where}, {'mixed float16' if mixed else 'float32'}" + (
        ", MirroredStrategy" if len(gpus) > 1 else ""
    )

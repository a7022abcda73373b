"""White-cell segmentation (Residual U-Net) and the paper's lymphoblast isolation.

Modules: `unet` (the network, Keras), `train` (patches and fitting), `infer` (saved model
bundle, sliding-window prediction, crops from any new smear), `isolate` (mask clean-up,
blue-channel isolation, cell crops; OpenCV only), `stage` (the pipeline stage). Only `unet`,
`train` and `infer` import TensorFlow.
"""

"""Classification networks: ImageNet backbones from keras.applications with the paper's heads."""

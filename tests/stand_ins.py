"Stand-in models shared by the inference and evaluation tests: a pointwise network and a tiny U-Net"
import keras

from bts_course.metrics import soft_dice_loss
from bts_course.model import unet_model_3d


def pointwise_model(channels=4, n_labels=3, seed=0):
    "Channels-first 1x1x1 convolution + sigmoid: each output voxel depends on its own input voxel only"
    keras.utils.set_random_seed(seed)
    inp = keras.Input((channels, None, None, None))
    x = keras.layers.Permute((2, 3, 4, 1))(inp)
    x = keras.layers.Conv3D(n_labels, 1, activation="sigmoid")(x)
    return keras.Model(inp, keras.layers.Permute((4, 1, 2, 3))(x))


def tiny_unet(input_shape=(4, None, None, None), seed=0):
    "A depth-2 U-Net with 2 base filters, free spatial sizes, seeded weights"
    keras.utils.set_random_seed(seed)
    return unet_model_3d(soft_dice_loss, input_shape=input_shape, depth=2, n_base_filters=2)

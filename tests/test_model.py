"The 3D U-Net: the course's size, channels-first I/O, free spatial sizes, normalisation switches, receptive field"
import numpy as np
import pytest

from bts_course.model import unet_model_3d, with_input_shape, receptive_field, model_divisor
from bts_course.metrics import soft_dice_loss
import keras
import tensorflow as tf


def small(**kw):
    kw = {"input_shape": (4, 32, 32, 16), "depth": 3, "n_base_filters": 4, **kw}
    return unet_model_3d(soft_dice_loss, **kw)


def test_course_size_parameter_count():
    model = unet_model_3d(soft_dice_loss)  # built, never run: a forward pass takes seconds on a CPU
    assert model.count_params() == 16_318_307
    assert model.input_shape == (None, 4, 160, 160, 16) and model.output_shape == (None, 3, 160, 160, 16)
    assert isinstance(model.optimizer, keras.optimizers.Adam)
    assert np.isclose(float(model.optimizer.learning_rate), 1e-5)
    assert receptive_field(model) == (96, 96, 96)


def test_channels_first_outside_channels_last_inside():
    model = unet_model_3d(soft_dice_loss, input_shape=(4, 64, 64, 16), depth=3, n_base_filters=8)
    x = np.random.default_rng(0).normal(size=(2, 4, 64, 64, 16)).astype(np.float32)
    y = model(x).numpy()
    assert y.shape == (2, 3, 64, 64, 16) and y.dtype == np.float32
    assert 0 <= y.min() and y.max() <= 1
    convs = [l for l in model.layers if isinstance(l, keras.layers.Conv3D)]
    assert convs and all(l.data_format == "channels_last" for l in convs)
    # the class axis of the output is axis 1: swapping two input samples swaps the outputs, nothing else moves
    np.testing.assert_allclose(model(x[::-1]).numpy(), y[::-1], atol=1e-5)


def test_same_weights_run_on_larger_windows():
    keras.utils.set_random_seed(1)
    fixed = unet_model_3d(soft_dice_loss, input_shape=(4, 64, 64, 16), depth=3, n_base_filters=8)
    free = unet_model_3d(soft_dice_loss, input_shape=(4, None, None, None), depth=3, n_base_filters=8)
    free.set_weights(fixed.get_weights())
    big = np.random.default_rng(2).normal(size=(1, 4, 96, 64, 32)).astype(np.float32)
    out = free(big).numpy()
    assert out.shape == (1, 3, 96, 64, 32)
    copy = with_input_shape(fixed, (4, 96, 64, 32))
    np.testing.assert_allclose(copy(big).numpy(), out, atol=1e-5)
    crop = big[:, :, :64, :, :16]
    np.testing.assert_allclose(free(crop).numpy(), fixed(crop).numpy(), atol=1e-5)


@pytest.mark.parametrize("shape, message", [
    ((4, 60, 64, 16), "multiple of 8"),
    ((160, 160, 16), "channels first"),
    ((None, 64, 64, 16), "channels"),
])
def test_bad_input_shapes_are_refused(shape, message):
    with pytest.raises(ValueError, match=message):
        unet_model_3d(soft_dice_loss, input_shape=shape)


def test_model_divisor_is_the_product_of_the_pooling_factors():
    assert model_divisor(unet_model_3d(soft_dice_loss, (4, None, None, None), depth=4, n_base_filters=1)) == (8, 8, 8)
    assert model_divisor(unet_model_3d(soft_dice_loss, (4, None, None, None), pool_size=(2, 2, 1), depth=3,
                                       n_base_filters=1)) == (4, 4, 1)


def test_batch_and_instance_normalisation_take_effect():
    keras.utils.set_random_seed(0); plain = small()
    keras.utils.set_random_seed(0); bn = small(batch_normalization=True)
    keras.utils.set_random_seed(0); inorm = small(layer_normalization="instance")
    channels = sum(l.filters for l in plain.layers if isinstance(l, keras.layers.Conv3D) and l.name != "logits")
    assert bn.count_params() - plain.count_params() == 4 * channels
    assert inorm.count_params() - plain.count_params() == 2 * channels
    assert len(bn.layers) == len(inorm.layers) == len(plain.layers) + 10  # one per convolution block
    x = np.random.default_rng(1).normal(3.0, 5.0, size=(2, 4, 32, 32, 16)).astype(np.float32)
    ref = plain(x).numpy()
    assert np.abs(bn(x, training=True).numpy() - ref).max() > 1e-2
    assert np.abs(inorm(x).numpy() - ref).max() > 1e-2
    # instance norm: every sample and channel of a normalised feature map has mean 0 and std 1
    probe = keras.Model(inorm.input, inorm.get_layer("down0_conv1_in").output)
    feats = probe(x).numpy()  # (B, X, Y, Z, C) inside the model
    np.testing.assert_allclose(feats.mean(axis=(1, 2, 3)), 0, atol=1e-3)
    np.testing.assert_allclose(feats.std(axis=(1, 2, 3)), 1, atol=2e-2)
    with pytest.raises(ValueError, match="contradict"):
        small(batch_normalization=True, layer_normalization="instance")
    with pytest.raises(ValueError, match="normalization"):
        small(layer_normalization="layer")


def test_deconvolution_adds_learnt_upsampling():
    plain, deconv = small(), small(deconvolution=True)
    # one transposed convolution per upward level, 2x2x2 kernels, as many filters as its input has
    extra = sum(8 * c * c + c for c in (32, 16))
    assert deconv.count_params() - plain.count_params() == extra
    assert deconv(np.zeros((1, 4, 32, 32, 16), np.float32)).shape == (1, 3, 32, 32, 16)


def test_receptive_field_matches_gradient_support():
    model = unet_model_3d(soft_dice_loss, input_shape=(4, 32, 32, 32), depth=2, n_base_filters=4)
    assert receptive_field(model) == (18, 18, 18)
    x = tf.constant(np.random.default_rng(0).normal(size=(4, 4, 32, 32, 32)).astype(np.float32))
    with tf.GradientTape() as tape:
        tape.watch(x)
        out = tf.reduce_sum(model(x)[:, 1, 16, 16, 16])
    g = np.abs(tape.gradient(out, x).numpy()).sum(axis=(0, 1))
    extent = [np.flatnonzero(g.sum(axis=tuple(a for a in range(3) if a != ax))) for ax in range(3)]
    assert tuple(int(e[-1] - e[0] + 1) for e in extent) == (18, 18, 18)


def test_mixed_precision_keeps_float32_probabilities():
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("mixed_bfloat16")  # float16 has no CPU max-pooling kernel; bfloat16 does
    try: model = small()
    finally: keras.mixed_precision.set_global_policy(previous)
    assert model.get_layer("down0_conv1").compute_dtype == "bfloat16"
    assert model.get_layer("down0_conv1").variable_dtype == "float32"
    assert model.get_layer("probabilities").compute_dtype == "float32"
    assert model(np.zeros((1, 4, 32, 32, 16), np.float32)).dtype == tf.float32

"""Tests of `bts_course.util`: the course assignment's helper names, called as the assignment calls them, against
independent computations."""
import inspect, json
from pathlib import Path

import h5py
import imageio.v3 as iio
import keras
import numpy as np
import pytest
from IPython.display import Image
from matplotlib.figure import Figure

import bts_course.util as util
from bts_course import evaluation, viz
from bts_course.data import example_patches, one_hot, write_json
from bts_course.labels import probabilities_to_labels
from bts_course.dataset import write_course_dataset
from bts_course.inference import predict_volume
from bts_course.metrics import dice_coefficient, soft_dice_loss
from bts_course.scores import get_sens_spec_df
from bts_course.phantom import make_phantom

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "course_patches"  # shared/ sits beside the checkout
REQUIRED = inspect.Parameter.empty

# The course's helper module, name by name: (parameter, default) in order (REQUIRED: no default)
COURSE_SIGNATURES = {
    "get_labeled_image": [("image", REQUIRED), ("label", REQUIRED), ("is_categorical", False)],
    "plot_image_grid": [("image", REQUIRED)],
    "visualize_data_gif": [("data_", REQUIRED)],
    "visualize_patch": [("X", REQUIRED), ("y", REQUIRED)],
    "unet_model_3d": [("loss_function", REQUIRED), ("input_shape", (4, 160, 160, 16)), ("pool_size", (2, 2, 2)),
                      ("n_labels", 3), ("initial_learning_rate", 0.00001), ("deconvolution", False), ("depth", 4),
                      ("n_base_filters", 32), ("include_label_wise_dice_coefficients", False), ("metrics", []),
                      ("batch_normalization", False), ("activation_name", "sigmoid")],
    "VolumeDataGenerator": [("sample_list", REQUIRED), ("base_dir", REQUIRED), ("batch_size", 1), ("shuffle", True),
                            ("dim", (160, 160, 16)), ("num_channels", 4), ("num_classes", 3), ("verbose", 1)],
    "predict_and_viz": [("image", REQUIRED), ("label", REQUIRED), ("model", REQUIRED), ("threshold", REQUIRED),
                        ("loc", (100, 100, 50))],
}


@pytest.mark.parametrize("name", COURSE_SIGNATURES)
def test_the_courses_signatures(name):
    params = list(inspect.signature(getattr(util, name)).parameters.values())
    got = [(p.name, list(p.default) if p.name == "metrics" else p.default) for p in params]  # metrics=(): the course's []
    assert got == COURSE_SIGNATURES[name]
    assert all(p.kind == p.POSITIONAL_OR_KEYWORD for p in params)


@pytest.fixture(scope="module")
def case():
    return make_phantom(1, shape=(48, 40, 32))


@pytest.fixture
def shown(monkeypatch):
    "What the adapters display, as in a notebook"
    figures = []
    monkeypatch.setattr(viz, "in_notebook", lambda: True)
    monkeypatch.setattr("IPython.display.display", lambda *objs: figures.extend(objs))
    return figures


# --- the pictures ---------------------------------------------------------------------------------

def test_get_labeled_image_is_the_courses_uint8_volume(case):
    rgb = util.get_labeled_image(case.image, case.label, is_categorical=False)
    assert rgb.shape == (48, 40, 32, 3) and rgb.dtype == np.uint8
    flair = case.image[..., 0].astype(np.float64)
    grey = (flair - flair.min()) / (flair.max() - flair.min()) * 255
    healthy = case.label == 0
    np.testing.assert_allclose(rgb[healthy], np.repeat(grey[healthy][:, None], 3, 1), atol=0.51)
    for code, colour in {1: (255, 0, 0), 2: (0, 255, 0), 3: (0, 0, 255)}.items():
        assert (rgb[case.label == code] == colour).all()
    np.testing.assert_array_equal(util.get_labeled_image(case.image, one_hot(case.label), is_categorical=True), rgb)


@pytest.mark.parametrize("call, error, message", [
    (lambda c: util.get_labeled_image(c.image, c.label, is_categorical=True), ValueError, "one-hot label"),
    (lambda c: util.get_labeled_image(c.image, one_hot(c.label)[..., 1:], is_categorical=True), ValueError, "one-hot label"),
    (lambda c: util.get_labeled_image(c.image[..., :2], c.label), ValueError, "channels"),
    (lambda c: util.get_labeled_image(c.image, c.label[:10]), ValueError, "label has shape"),
    (lambda c: util.get_labeled_image(c.image, c.label * 2), ValueError, "codes"),
])
def test_get_labeled_image_errors(case, call, error, message):
    with pytest.raises(error, match=message):
        call(case)


def test_plot_image_grid_draws_three_rows_of_six(case, shown):
    assert util.plot_image_grid(util.get_labeled_image(case.image, case.label)) is None
    (fig,) = shown
    assert isinstance(fig, Figure) and len(fig.axes) == 18
    titles = [ax.get_title() for ax in fig.axes]
    assert sum(t.startswith("sagittal") for t in titles) == sum(t.startswith("axial") for t in titles) == 6


def test_pictures_draw_nothing_outside_a_notebook(case, monkeypatch):
    monkeypatch.setattr(viz, "in_notebook", lambda: False)
    monkeypatch.setattr("IPython.display.display", lambda *objs: pytest.fail("displayed outside a notebook"))
    util.plot_image_grid(util.get_labeled_image(case.image, case.label))
    util.visualize_patch(case.image[..., 0], case.label == 1)


def test_visualize_data_gif_returns_an_image_of_the_gif(case, monkeypatch, tmp_path):
    path = tmp_path / "scroll.gif"
    monkeypatch.setattr(viz, "_new_gif_path", lambda: path)
    gif = util.visualize_data_gif(util.get_labeled_image(case.image, case.label))
    assert isinstance(gif, Image) and gif.format == "gif" and gif.data[:6] == b"GIF89a"
    frames = iio.imread(gif.data, index=None, extension=".gif")
    assert frames.shape[0] == 48  # one frame per slice of the longest axis
    assert frames.shape[2] == 40 + 48 + 48 + 2 * 2  # sagittal (Y wide), coronal and axial (X wide), 2-pixel gaps
    assert not path.exists()  # the temporary file is gone: the Image holds the bytes


def test_visualize_data_gif_errors(case):
    with pytest.raises(ValueError, match="expected RGB"):
        util.visualize_data_gif(case.image)
    with pytest.raises(ValueError, match=r"expected \[0, 1\]"):
        util.visualize_data_gif(case.image[..., 0])


def test_visualize_patch_as_the_assignment_calls_it(case, shown):
    from bts_course.preprocess import standardize
    from bts_course.sampling import get_sub_volume
    np.random.seed(0)
    X, y = get_sub_volume(case.image, case.label, orig_x=48, orig_y=40, orig_z=32, output_x=32, output_y=32, output_z=16,
                          background_threshold=0.99)
    X_norm = standardize(X)
    assert util.visualize_patch(X_norm[0, :, :, :], y[2]) is None
    (fig,) = shown
    assert len(fig.axes) == 2
    z = int(np.argmax(y[2].sum(axis=(0, 1))))  # the slice richest in enhancing tumour
    assert fig.axes[0].get_title() == f"image, z={z}"
    with pytest.raises(ValueError, match="spatial shape"):
        util.visualize_patch(X_norm[0], y[2, :10])


# --- the model ------------------------------------------------------------------------------------

def test_unet_model_3d_the_assignments_call():
    model = util.unet_model_3d(loss_function=soft_dice_loss, metrics=[dice_coefficient])
    assert model.count_params() == 16_318_307
    assert model.input_shape == (None, 4, 160, 160, 16) and model.output_shape == (None, 3, 160, 160, 16)
    assert model.loss is soft_dice_loss
    assert float(model.optimizer.learning_rate) == pytest.approx(1e-5)


def tiny(**kwargs):
    return util.unet_model_3d(soft_dice_loss, input_shape=(4, None, None, None), depth=2, n_base_filters=4, **kwargs)


@pytest.mark.parametrize("kwargs, logged", [
    (dict(), {"loss"}),
    (dict(metrics=[dice_coefficient]), {"loss", "dice_coefficient"}),
    (dict(metrics=dice_coefficient), {"loss", "dice_coefficient"}),
    (dict(include_label_wise_dice_coefficients=True),
     {"loss", "dice_edema", "dice_non_enhancing", "dice_enhancing"}),
])
def test_unet_model_3d_metrics(kwargs, logged):
    keras.utils.set_random_seed(0)
    x = np.random.default_rng(0).random((1, 4, 8, 8, 8), dtype=np.float32)
    y = (x[:, :3] > 0.5).astype(np.float32)
    assert set(tiny(**kwargs).evaluate(x, y, verbose=0, return_dict=True)) == logged


def test_unet_model_3d_errors():
    with pytest.raises(ValueError, match="n_labels=2"):
        util.unet_model_3d(soft_dice_loss, n_labels=2, include_label_wise_dice_coefficients=True)
    with pytest.raises(ValueError, match="depth must be a positive integer"):
        util.unet_model_3d(soft_dice_loss, depth=0)
    with pytest.raises(ValueError, match="multiple of"):
        util.unet_model_3d(soft_dice_loss, input_shape=(4, 100, 160, 16))


# --- the data generator ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def base_dir(tmp_path_factory):
    "The four shipped patches in the course's layout: processed/train/, processed/valid/, processed/config.json"
    root = tmp_path_factory.mktemp("course") / "processed"
    patches = example_patches()
    for split in ("train", "valid"): write_course_dataset(root / split, [p for p in patches if p.subset == split])
    write_json({s: [p.name for p in patches if p.subset == s] for s in ("train", "valid")}, root / "config.json")
    return f"{root}/"


def course_batch(folder, names, crop=None):
    "What a batch must hold, computed here: x standardised per channel and z-slice, y without background, classes first"
    X, Y = [], []
    for name in names:
        with h5py.File(Path(folder) / name, "r") as f: x, y = np.asarray(f["x"], np.float64), np.asarray(f["y"], np.float64)
        if crop is not None: x, y = x[(slice(None),) + crop], y[crop]
        mean, std = x.mean(axis=(1, 2), keepdims=True), x.std(axis=(1, 2), keepdims=True)
        X.append(np.divide(x - mean, std, out=np.zeros_like(x), where=std > 0))
        Y.append(np.moveaxis(y, 3, 0)[1:])
    return np.stack(X), np.stack(Y)


def test_volume_data_generator_the_assignments_call(base_dir):
    with open(base_dir + "config.json", encoding="utf-8") as json_file:
        config = json.load(json_file)
    train_generator = util.VolumeDataGenerator(config["train"], base_dir + "train/", batch_size=3, dim=(160, 160, 16), verbose=0)
    valid_generator = util.VolumeDataGenerator(config["valid"], base_dir + "valid/", batch_size=3, dim=(160, 160, 16), verbose=0)
    assert isinstance(train_generator, keras.utils.PyDataset)
    assert (len(train_generator), len(valid_generator)) == (1, 1)  # the course's floor(1 / 3) would give no batch
    X, y = valid_generator[0]
    assert X.shape == (1, 4, 160, 160, 16) and y.shape == (1, 3, 160, 160, 16) and X.dtype == y.dtype == np.float32
    X_ref, y_ref = course_batch(base_dir + "valid/", config["valid"])
    np.testing.assert_allclose(X, X_ref, atol=2e-5)
    np.testing.assert_array_equal(y, y_ref)
    X, y = train_generator[0]
    assert X.shape == (3, 4, 160, 160, 16)


@pytest.mark.skipif(not SHARED.is_dir(), reason="the shared real patches are not on this machine")
def test_volume_data_generator_on_the_courses_own_folder(capsys):
    "The 20 real patches as the course cut them: every train file once per epoch, in batches of 3 (the last of 1)"
    config = json.loads((SHARED / "config.json").read_text(encoding="utf-8"))
    gen = util.VolumeDataGenerator(config["train"], f"{SHARED}/train/", batch_size=3)
    assert len(gen) == 6  # 16 patches: the course's floor would drop one
    sizes = [len(gen[i][0]) for i in range(len(gen))]
    assert sizes == [3, 3, 3, 3, 3, 1]
    read = [Path(line.removeprefix("Training on: ")).name for line in capsys.readouterr().out.splitlines()]
    assert sorted(read) == sorted(config["train"])


def test_volume_data_generator_crops_a_smaller_dim(base_dir):
    names = json.loads(Path(base_dir + "config.json").read_text(encoding="utf-8"))["train"]
    gen = util.VolumeDataGenerator(names, base_dir + "train/", batch_size=3, shuffle=False, dim=(128, 96, 16), verbose=0)
    X, y = gen[0]
    X_ref, y_ref = course_batch(base_dir + "train/", names, crop=(slice(16, 144), slice(32, 128), slice(0, 16)))
    np.testing.assert_allclose(X, X_ref, atol=2e-5)
    np.testing.assert_array_equal(y, y_ref)
    assert gen.dim == (128, 96, 16) and gen.sample_list == names


def test_volume_data_generator_order(base_dir, capsys):
    names = json.loads(Path(base_dir + "config.json").read_text(encoding="utf-8"))["train"]
    def order(gen):
        for i in range(len(gen)): gen[i]
        return [Path(line.removeprefix("Training on: ")).name for line in capsys.readouterr().out.splitlines()]
    assert order(util.VolumeDataGenerator(names, base_dir + "train/", shuffle=False)) == names
    gen = util.VolumeDataGenerator(names, base_dir + "train/")
    epochs = []
    for _ in range(6):
        epochs.append(order(gen)); gen.on_epoch_end()
    assert all(sorted(e) == sorted(names) for e in epochs)  # each patch once per epoch
    assert len({tuple(e) for e in epochs}) > 1  # a new order each epoch
    gen_again = util.VolumeDataGenerator(names, base_dir + "train/")
    assert order(gen_again) == epochs[0]  # and the same orders next time


@pytest.mark.parametrize("call, error, message", [
    (lambda b, n: util.VolumeDataGenerator(n, b + "train/", dim=(192, 160, 16)), ValueError, "larger than the stored patches"),
    (lambda b, n: util.VolumeDataGenerator(n, b + "train/", dim=(160, 160, 32)), ValueError, "larger than the stored patches"),
    (lambda b, n: util.VolumeDataGenerator(n, b + "train/", dim=(160, 160)), ValueError, "dim must be"),
    (lambda b, n: util.VolumeDataGenerator(n, b + "valid/"), FileNotFoundError, "3 of the 3 patches"),
    (lambda b, n: util.VolumeDataGenerator(n + ["nowhere.h5"], b + "train/"), FileNotFoundError, "nowhere.h5"),
    (lambda b, n: util.VolumeDataGenerator([], b + "train/"), ValueError, "sample_list is empty"),
    (lambda b, n: util.VolumeDataGenerator(n[0], b + "train/"), TypeError, "list of patch file names"),
    (lambda b, n: util.VolumeDataGenerator(n, b + "train/", num_classes=2), ValueError, r"y \(X, Y, Z, 3\)"),
    (lambda b, n: util.VolumeDataGenerator(n, b + "train/", num_channels=3), ValueError, r"x \(3, X, Y, Z\)"),
    (lambda b, n: util.VolumeDataGenerator(n, b + "train/", batch_size=0), ValueError, "batch_size must be at least 1"),
])
def test_volume_data_generator_errors(base_dir, call, error, message):
    names = json.loads(Path(base_dir + "config.json").read_text(encoding="utf-8"))["train"]
    with pytest.raises(error, match=message):
        call(base_dir, names)


def test_fit_and_evaluate_take_the_generators(base_dir):
    "Keras 3's fit / evaluate in place of fit_generator / evaluate_generator, unpacked as the assignment does"
    config = json.loads(Path(base_dir + "config.json").read_text(encoding="utf-8"))
    train_generator = util.VolumeDataGenerator(config["train"], base_dir + "train/", batch_size=3, dim=(32, 32, 16), verbose=0)
    valid_generator = util.VolumeDataGenerator(config["valid"], base_dir + "valid/", batch_size=3, dim=(32, 32, 16), verbose=0)
    keras.utils.set_random_seed(0)
    model = tiny(metrics=[dice_coefficient])
    history = model.fit(train_generator, steps_per_epoch=1, epochs=1, validation_data=valid_generator,
                        validation_steps=1, verbose=0)
    assert set(history.history) == {"loss", "dice_coefficient", "val_loss", "val_dice_coefficient"}
    val_loss, val_dice = model.evaluate(valid_generator, verbose=0)
    X, y = valid_generator[0]
    probs = model.predict(X, verbose=0)
    assert val_loss == pytest.approx(float(soft_dice_loss(y, probs)), abs=1e-5)
    assert val_dice == pytest.approx(float(dice_coefficient(y, probs)), abs=1e-5)


# --- predict_and_viz ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def model():
    keras.utils.set_random_seed(0)
    return tiny()


def middle_threshold(model, image, q=0.5):
    "A threshold that the highest class probability passes at a share `1 - q` of the voxels, so the prediction is not trivial"
    return float(np.quantile(predict_volume(model, image, progress=False).max(-1), q))


def test_predict_and_viz_returns_the_courses_one_hot(case, model, shown):
    threshold = middle_threshold(model, case.image)
    pred = util.predict_and_viz(case.image, case.label, model, threshold, loc=(24, 20, 16))
    assert pred.shape == (48, 40, 32, 4) and pred.dtype == np.float32
    np.testing.assert_array_equal(pred.sum(-1), 1)
    codes = probabilities_to_labels(predict_volume(model, case.image, progress=False), threshold)
    assert 0 < (codes > 0).mean() < 1
    np.testing.assert_array_equal(pred.argmax(-1), codes)
    labels, _ = evaluation.predict_and_viz(case.image, case.label, model, threshold, loc=(24, 20, 16), progress=False)
    np.testing.assert_array_equal(pred.argmax(-1), labels)
    (fig,) = shown[:1]
    assert isinstance(fig, Figure) and len(fig.axes) == 6
    assert fig.axes[0].get_title() == "truth, sagittal x = 24"


def test_predict_and_viz_then_the_assignments_table(case, model):
    threshold = middle_threshold(model, case.image)
    pred = util.predict_and_viz(case.image, case.label, model, threshold, loc=(24, 20, 16))
    whole_scan_label = np.moveaxis(keras.utils.to_categorical(case.label, num_classes=4), 3, 0)[1:4]
    whole_scan_pred = np.moveaxis(pred, 3, 0)[1:4]
    table = get_sens_spec_df(whole_scan_pred, whole_scan_label)
    codes = pred.argmax(-1)
    for code, name in enumerate(table.columns, 1):
        p, t = codes == code, case.label == code
        if t.any(): assert table.loc["Sensitivity", name] == pytest.approx((p & t).sum() / t.sum())
        assert table.loc["Specificity", name] == pytest.approx((~p & ~t).sum() / (~t).sum())


def test_predict_and_viz_honours_the_threshold_and_ignores_the_truth(case, model):
    threshold = middle_threshold(model, case.image)
    pred = util.predict_and_viz(case.image, case.label, model, threshold, (24, 20, 16))
    blind = util.predict_and_viz(case.image, np.zeros_like(case.label), model, threshold, (24, 20, 16))
    np.testing.assert_array_equal(blind, pred)  # the course copied the background from the truth
    strict = util.predict_and_viz(case.image, case.label, model, middle_threshold(model, case.image, 0.8), (24, 20, 16))
    tumour, strict_tumour = pred[..., 0] == 0, strict[..., 0] == 0
    assert strict_tumour.sum() < tumour.sum() and not (strict_tumour & ~tumour).any()  # the course ignored it


@pytest.mark.parametrize("call, error, message", [
    (lambda c, m: util.predict_and_viz(c.image, c.label, m, 0.5), ValueError, r"loc \(100, 100, 50\) must be"),
    (lambda c, m: util.predict_and_viz(c.image, c.label, "model_pretrained.hdf5", 0.5, (1, 1, 1)), TypeError, "keras.Model"),
    (lambda c, m: util.predict_and_viz(c.image[..., :3], c.label, m, 0.5, (1, 1, 1)), ValueError, "channels"),
    (lambda c, m: util.predict_and_viz(c.image, c.label[:10], m, 0.5, (1, 1, 1)), ValueError, "label has shape"),
    (lambda c, m: util.predict_and_viz(np.moveaxis(c.image, -1, 0), c.label, m, 0.5, (1, 1, 1)), ValueError, "channels-first"),
])
def test_predict_and_viz_errors(case, model, call, error, message):
    with pytest.raises(error, match=message):
        call(case, model)


# ---------------------------------------------------------------- the course's own weights (Keras 2 HDF5)

def keras2_file(model, path, layout="weights"):
    """The weights of `model` written as Keras 2 wrote them, with h5py: `save_weights` puts the layers at the root,
    `model.save` under `model_weights/` beside `optimizer_weights/` and a `model_config` attribute"""
    weighted = [layer for layer in model.layers if layer.weights]
    names = ["input_1", "permute_1"] + [f"conv3d_{i}" for i in range(1, len(weighted) + 1)]
    with h5py.File(path, "w") as f:
        if layout == "save":
            f.attrs["model_config"] = json.dumps({"class_name": "Model", "config": {}}).encode()
            f.attrs["keras_version"] = b"2.2.4"
            f.create_group("optimizer_weights").create_dataset("Adam/iterations:0", data=np.int64(7))
        group = f.create_group("model_weights") if layout == "save" else f
        group.attrs["layer_names"] = np.array([n.encode() for n in names])
        group.attrs["backend"], group.attrs["keras_version"] = b"tensorflow", b"2.2.4"
        for name in names[:2]: group.create_group(name).attrs["weight_names"] = np.array([], dtype="S1")
        for name, layer in zip(names[2:], weighted, strict=True):
            g = group.create_group(name)
            g.attrs["weight_names"] = np.array([f"{name}/{w.name}:0".encode() for w in layer.weights])
            for w in layer.weights: g[f"{name}/{w.name}:0"] = np.asarray(w)
    return path


@pytest.mark.parametrize("layout", ["weights", "save"])
def test_course_weights_load_with_load_weights_and_predict_the_same(tmp_path, layout):
    keras.utils.set_random_seed(11)
    original = util.unet_model_3d(soft_dice_loss, input_shape=(4, 32, 32, 16), depth=3, n_base_filters=4)
    path = keras2_file(original, tmp_path / "model_pretrained.hdf5", layout)
    fresh = util.unet_model_3d(soft_dice_loss, input_shape=(4, 32, 32, 16), depth=3, n_base_filters=4)
    x = np.random.default_rng(1).normal(size=(2, 4, 32, 32, 16)).astype(np.float32)
    assert not np.allclose(fresh.predict_on_batch(x), original.predict_on_batch(x))
    fresh.load_weights(path)
    np.testing.assert_array_equal(fresh.predict_on_batch(x), original.predict_on_batch(x))


def test_course_size_weights_are_fifteen_convolutions(tmp_path):
    model = util.unet_model_3d(soft_dice_loss)
    weighted = [layer for layer in model.layers if layer.weights]
    assert len(weighted) == 15 and tuple(weighted[-1].weights[0].shape) == (1, 1, 1, 64, 3)
    path = keras2_file(model, tmp_path / "model_pretrained.hdf5")
    kernels = [np.asarray(layer.weights[0]) for layer in weighted]
    for layer in weighted: layer.set_weights([np.zeros(w.shape, np.float32) for w in layer.weights])
    model.load_weights(str(path))   # the course passes a string: HOME_DIR + "model_pretrained.hdf5"
    assert all(np.array_equal(np.asarray(layer.weights[0]), k) for layer, k in zip(weighted, kernels, strict=True))


def test_course_weights_that_do_not_fit_say_what_differs(tmp_path):
    keras.utils.set_random_seed(0)
    small = util.unet_model_3d(soft_dice_loss, input_shape=(4, 32, 32, 16), depth=2, n_base_filters=4)
    path = keras2_file(small, tmp_path / "small.hdf5")
    course = util.unet_model_3d(soft_dice_loss)
    with pytest.raises(ValueError, match=r"small.hdf5 holds weights for 7 layers .* this model has 15 layers with weights"):
        course.load_weights(path)
    wide = util.unet_model_3d(soft_dice_loss, input_shape=(4, 32, 32, 16), depth=2, n_base_filters=8)
    with pytest.raises(ValueError, match=r"layer 1 of 7 \(conv3d_1\) holds shapes \[\(3, 3, 3, 4, 4\), \(4,\)\] but the model's "
                                         r"down0_conv1 takes \[\(3, 3, 3, 4, 8\), \(8,\)\]"):
        wide.load_weights(path)
    truncated = tmp_path / "truncated.hdf5"
    truncated.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(ValueError, match="truncated.hdf5: (not a readable HDF5 file|the weights of layer)"):
        small.load_weights(truncated)
    with pytest.raises(FileNotFoundError, match="no such weights file"):
        small.load_weights(tmp_path / "missing.hdf5")
    other = tmp_path / "other.hdf5"
    with h5py.File(other, "w") as f: f["x"] = np.zeros(3)
    with pytest.raises(ValueError, match="not a Keras 2 weights file"):
        small.load_weights(other)


def test_keras3_weight_files_still_load_through_keras(tmp_path):
    keras.utils.set_random_seed(3)
    a = util.unet_model_3d(soft_dice_loss, input_shape=(4, 32, 32, 16), depth=2, n_base_filters=4)
    a.save_weights(tmp_path / "w.weights.h5")
    b = util.unet_model_3d(soft_dice_loss, input_shape=(4, 32, 32, 16), depth=2, n_base_filters=4)
    b.load_weights(tmp_path / "w.weights.h5")
    x = np.ones((1, 4, 32, 32, 16), np.float32)
    np.testing.assert_array_equal(a.predict_on_batch(x), b.predict_on_batch(x))

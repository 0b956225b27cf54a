"Data generator, checkpointed training with resume, reloading saved models, and `bts train`"
import hashlib, json, subprocess, sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bts_course.cli import main
from bts_course.phantom import make_phantom
from bts_course.data import save_nifti, write_json
from bts_course.dataset import build_patch_dataset, write_course_dataset, write_patch_file
from bts_course.demo import write_phantom_dataset
from bts_course.metrics import soft_dice_loss
from bts_course.model import model_outputs, unet_model_3d
from bts_course.preprocess import standardize
from bts_course.training import (VolumeDataGenerator, TrainingState, copy_weights, model_arrays, patch_files, read_config,
                                 read_patch, train)
import keras
import tensorflow as tf

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "course_patches"  # shared/ sits beside the checkout
BTS = str(Path(sys.executable).with_name("bts"))


@pytest.fixture(scope="module")
def real(tmp_path_factory):
    "The four real patches shipped with the package, as a course folder (3 train, 1 valid)"
    return write_course_dataset(tmp_path_factory.mktemp("real"))


@pytest.fixture(scope="module")
def phantoms(tmp_path_factory):
    "A tiny phantom data set: 32x32x16 patches, 4 train / 2 valid"
    return write_phantom_dataset(tmp_path_factory.mktemp("ph") / "data", n_cases=3, patches_per_case=2, shape=(96, 96, 48),
                                 patch_size=(32, 32, 16), valid_fraction=1 / 3)


def tiny_unet():
    return unet_model_3d(soft_dice_loss, input_shape=(4, None, None, None), depth=2, n_base_filters=4,
                         initial_learning_rate=1e-3)


def check_standardised(X):
    "Every channel and z-slice of every patch of a batch `(B, C, X, Y, Z)` has mean 0 and std 1 (or is all zero)"
    mean, std = X.mean(axis=(2, 3)), X.std(axis=(2, 3))
    np.testing.assert_allclose(mean, 0, atol=1e-4)
    assert np.all((np.abs(std - 1) < 1e-3) | (std == 0))


# --- the data generator -------------------------------------------------------------------------------------------

@pytest.mark.skipif(not SHARED.is_dir(), reason="the shared real patches are not on this machine")
def test_generator_on_the_course_folder_layout():
    config = read_config(SHARED)
    assert (len(config["train"]), len(config["valid"])) == (16, 4)
    gen = VolumeDataGenerator(SHARED, "valid", batch_size=3)  # valid files live in train/ there
    assert len(gen) == 2
    X, y = gen[0]
    assert X.shape == (3, 4, 160, 160, 16) and y.shape == (3, 3, 160, 160, 16)
    assert X.dtype == y.dtype == np.float32
    check_standardised(X)
    x_raw, y_raw = read_patch(gen.files[0])
    np.testing.assert_array_equal(y[0], np.moveaxis(y_raw, -1, 0)[1:])
    np.testing.assert_allclose(X[0], standardize(x_raw), atol=1e-6)
    assert set(np.unique(y)) <= {0.0, 1.0}
    assert gen[1][0].shape == (1, 4, 160, 160, 16)  # the last, partial batch is kept


def test_generator_shapes_and_standardisation(real):
    gen = VolumeDataGenerator(real, "train", batch_size=2)
    assert len(gen) == 2 and gen.shuffle and not gen.flip
    X, y = gen[0]
    assert X.shape == (2, 4, 160, 160, 16) and y.shape == (2, 3, 160, 160, 16)
    check_standardised(X)
    assert f"{X[0, 0, :, :, 0].std():.2f}" == "1.00"
    i = int(gen._order[0])
    X0, y0 = model_arrays(*read_patch(gen.files[i]))
    np.testing.assert_array_equal(X[0], X0)
    np.testing.assert_array_equal(y[0], y0)
    with pytest.raises(IndexError):
        gen[2]


def test_shuffle_is_seeded_and_changes_every_epoch(real):
    a, b = VolumeDataGenerator(real, "train", seed=5), VolumeDataGenerator(real, "train", seed=5)
    orders = []
    for _ in range(6):
        assert list(a._order) == list(b._order)
        orders.append(tuple(a._order))
        a.on_epoch_end(); b.on_epoch_end()
    assert len(set(orders)) > 1
    c = VolumeDataGenerator(real, "train", seed=5)
    c.set_epoch(3)
    assert tuple(c._order) == orders[3]
    assert list(VolumeDataGenerator(real, "valid")._order) == [0]


def test_flips_move_image_and_label_together(real):
    gen = VolumeDataGenerator(real, "train", batch_size=1, flip=True, seed=0)
    plain = VolumeDataGenerator(real, "train", batch_size=1, shuffle=False)
    seen = set()
    for epoch in range(8):
        X0, y0 = plain.sample(0)
        X, y = gen.sample(0, epoch=epoch)
        matches = [axes for axes in [(), (1,), (2,), (3,), (1, 2), (1, 3), (2, 3), (1, 2, 3)]
                   if np.array_equal(X, np.flip(X0, axes)) and np.array_equal(y, np.flip(y0, axes))]
        assert len(matches) == 1, epoch
        seen.add(matches[0])
    assert len(seen) > 2  # several different flips over the epochs


def test_random_and_centred_crops(real):
    train_gen = VolumeDataGenerator(real, "train", batch_size=3, patch_size=(64, 48, 16), seed=2)
    X, y = train_gen[0]
    assert X.shape == (3, 4, 64, 48, 16) and y.shape == (3, 3, 64, 48, 16)
    check_standardised(X)
    x_raw, y_raw = read_patch(train_gen.files[0])
    y_full = np.moveaxis(y_raw, -1, 0)[1:]
    Xc, yc = train_gen.sample(0)
    hits = [(i, j) for i in range(160 - 64 + 1) for j in range(160 - 48 + 1)
            if np.array_equal(yc, y_full[:, i:i + 64, j:j + 48]) and
            np.allclose(Xc, standardize(x_raw[:, i:i + 64, j:j + 48]), atol=1e-5)]
    assert hits
    valid = VolumeDataGenerator(real, "valid", patch_size=(64, 64, 16))
    x_raw, _ = read_patch(valid.files[0])
    np.testing.assert_allclose(valid[0][0][0], standardize(x_raw[:, 48:112, 48:112]), atol=1e-6)
    with pytest.raises(ValueError, match="no larger than"):
        VolumeDataGenerator(real, "train", patch_size=(192, 64, 16))


def test_generator_on_build_patch_dataset_output(tmp_path):
    for seed in (0, 1):
        case = make_phantom(seed, (64, 64, 48))
        save_nifti(case.image, tmp_path / "src" / "imagesTr" / f"BRATS_{seed:03d}.nii.gz", case.affine)
        save_nifti(case.label, tmp_path / "src" / "labelsTr" / f"BRATS_{seed:03d}.nii.gz", case.affine)
    dest = build_patch_dataset(tmp_path / "src", tmp_path / "patches", patches_per_case=2, valid_fraction=0.5,
                               patch_size=(32, 32, 16), workers=1, progress=False)
    for split in ("train", "valid"):
        X, y = VolumeDataGenerator(dest, split, batch_size=2)[0]
        assert X.shape == (2, 4, 32, 32, 16) and y.shape == (2, 3, 32, 32, 16)
        check_standardised(X)


def test_phantom_dataset_splits_by_case(phantoms):
    config = read_config(phantoms)
    assert (len(config["train"]), len(config["valid"])) == (4, 2)
    case = lambda name: name.split("_")[1]
    assert not {case(n) for n in config["train"]} & {case(n) for n in config["valid"]}
    X, y = VolumeDataGenerator(phantoms, "train", batch_size=4)[0]
    assert X.shape == (4, 4, 32, 32, 16) and (y.max(axis=1).mean(axis=(1, 2, 3)) > 0.03).all()


def test_clear_errors_for_broken_folders(tmp_path, real):
    with pytest.raises(FileNotFoundError, match="no such folder"):
        read_config(tmp_path / "nothing")
    (tmp_path / "notes.txt").write_text("hi", encoding="utf-8")
    with pytest.raises(ValueError, match="notes.txt"):
        read_config(tmp_path / "notes.txt")
    broken = tmp_path / "broken"
    broken.mkdir()
    write_json({"train": ["gone.h5"], "valid": []}, broken / "config.json")
    with pytest.raises(FileNotFoundError, match="gone.h5"):
        patch_files(broken, "train")
    write_patch_file(broken / "gone.h5", np.zeros((3, 8, 8, 8), np.float32), np.zeros((8, 8, 8, 4), np.float32))
    with pytest.raises(ValueError, match="gone.h5"):
        VolumeDataGenerator(broken, "train")


# --- training -------------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def first_run(phantoms, tmp_path_factory):
    "One epoch of a tiny U-Net on the phantom patches"
    keras.utils.set_random_seed(0)
    out = tmp_path_factory.mktemp("run") / "run"
    result = train(tiny_unet, VolumeDataGenerator(phantoms, "train", batch_size=2, flip=True),
                   VolumeDataGenerator(phantoms, "valid", batch_size=2), epochs=1, out_dir=out, verbose=0)
    return out, result


def test_one_epoch_writes_checkpoints_and_log(first_run):
    out, result = first_run
    assert {p.name for p in out.iterdir()} == {"best.keras", "last.keras", "log.csv", "state.json"}
    log = pd.read_csv(out / "log.csv")
    assert list(log.epoch) == [0]
    for column in ("loss", "dice_coefficient", "val_loss", "val_dice_coefficient", "val_dice_edema"):
        assert column in log.columns and np.isfinite(log[column]).all()
    state = json.loads((out / "state.json").read_text(encoding="utf-8"))
    assert state["epoch"] == 1 and state["best_epoch"] == 0
    assert state["best"] == pytest.approx(log.val_dice_coefficient[0], abs=1e-6)
    assert result.initial_epoch == 0 and result.best_path.is_file()


def test_resume_continues_from_the_saved_epoch(first_run, phantoms):
    out, _ = first_run
    steps = len(VolumeDataGenerator(phantoms, "train", batch_size=2))
    saved = keras.models.load_model(out / "last.keras")
    assert int(saved.optimizer.iterations) == steps
    result = train(tiny_unet, VolumeDataGenerator(phantoms, "train", batch_size=2, flip=True),
                   VolumeDataGenerator(phantoms, "valid", batch_size=2), epochs=2, out_dir=out, verbose=0)
    assert result.initial_epoch == 1
    assert list(result.history.epoch) == [0, 1]
    assert int(result.model.optimizer.iterations) == 2 * steps  # the optimiser state came back too
    assert json.loads((out / "state.json").read_text(encoding="utf-8"))["epoch"] == 2
    again = train(tiny_unet, VolumeDataGenerator(phantoms, "train"), None, epochs=2, out_dir=out, verbose=0,
                  monitor="val_dice_coefficient")
    assert again.initial_epoch == 2 and len(again.history) == 2  # nothing left to do


def test_saved_model_loads_without_custom_objects(first_run, phantoms):
    out, _ = first_run
    code = ("import sys, numpy as np, keras, bts_course.model\n"
            "m = keras.models.load_model(sys.argv[1])\n"
            "print(m.loss.__name__, m(np.zeros((1, 4, 48, 32, 16), np.float32)).shape)")
    result = subprocess.run([sys.executable, "-c", code, str(out / "best.keras")], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "soft_dice_loss (1, 3, 48, 32, 16)" in result.stdout


def test_strategy_and_mixed_precision(phantoms, tmp_path):
    strategy = tf.distribute.MirroredStrategy(["/cpu:0"])
    with pytest.raises(ValueError, match="function that builds"):
        train(tiny_unet(), VolumeDataGenerator(phantoms, "train"), None, epochs=1, out_dir=tmp_path / "x", strategy=strategy)
    before = keras.mixed_precision.global_policy().name
    result = train(tiny_unet, VolumeDataGenerator(phantoms, "train", batch_size=2), VolumeDataGenerator(phantoms, "valid"),
                   epochs=1, out_dir=tmp_path / "run", strategy=strategy, mixed_precision="mixed_bfloat16", verbose=0)
    assert keras.mixed_precision.global_policy().name == before
    assert result.model.get_layer("down0_conv1").compute_dtype == "bfloat16"
    assert result.model.output.dtype == "float32"
    assert np.isfinite(result.history.loss).all()
    reloaded = keras.models.load_model(result.last_path)
    assert reloaded.get_layer("down0_conv1").compute_dtype == "bfloat16"


def test_training_state_early_stopping_and_best(tmp_path):
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    state = TrainingState(tmp_path, "val_dice_coefficient", "max", patience=2)
    state.set_model(model)
    model.stop_training = False
    for epoch, value in enumerate([0.5, 0.6, 0.55, 0.58]):
        state.on_epoch_end(epoch, {"val_dice_coefficient": value})
        assert model.stop_training == (epoch == 3)
        model.stop_training = False
    saved = json.loads((tmp_path / "state.json").read_text(encoding="utf-8"))
    assert 0 <= saved.pop("seconds") < 60                      # the training time so far, carried over on resume
    assert saved == {"epoch": 4, "monitor": "val_dice_coefficient", "mode": "max", "best": 0.6, "best_epoch": 1}
    with pytest.raises(KeyError, match="val_dice_coefficient"):
        state.on_epoch_end(4, {"loss": 0.3})


# --- the command line -------------------------------------------------------------------------------------------------

def bts(*args):
    return subprocess.run([BTS, *map(str, args)], capture_output=True, text=True, timeout=600)


@pytest.mark.parametrize("outputs, loss", [("classes", "soft_dice"), ("regions", "dice_bce")])
def test_bts_train_on_a_tiny_dataset(phantoms, tmp_path, outputs, loss):
    out = tmp_path / "cli"
    result = bts("train", phantoms, "--out", out, "--depth", "2", "--base-filters", "4", "--patch-size", "16", "16", "16",
                 "--epochs", "1", "--batch-size", "2", "--learning-rate", "1e-3", "--flip", "--outputs", outputs, "--loss", loss)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "best model:" in result.stdout
    assert {"best.keras", "last.keras", "log.csv", "state.json", "train_args.json"} <= {p.name for p in out.iterdir()}
    log = pd.read_csv(out / "log.csv")
    assert len(log) == 1
    names = ("whole_tumor", "tumor_core", "enhancing_tumor") if outputs == "regions" else ("edema",)
    assert all(any(name in column for column in log.columns) for name in names), list(log.columns)
    args = json.loads((out / "train_args.json").read_text(encoding="utf-8"))
    assert args["depth"] == 2 and args["patch_size"] == [16, 16, 16]
    assert args["outputs"] == outputs and args["loss"] == loss
    model = keras.models.load_model(out / "best.keras")
    assert model_outputs(model) == outputs
    assert model.count_params() == unet_model_3d(soft_dice_loss, (4, 32, 32, 16), depth=2, n_base_filters=4).count_params()


@pytest.mark.parametrize("args, needle", [
    (["train", "{tmp}/does-not-exist", "--out", "{tmp}/run"], "does-not-exist: no such folder"),
    (["train", "{phantoms}", "--out", "{tmp}/run", "--depth", "6"], "multiple of (32, 32, 32)"),
    (["train", "{phantoms}"], "--out"),
])
def test_bts_train_errors_are_one_line(args, needle, tmp_path, phantoms, capsys):
    "Through `main` in this process (the real executable's start-up lines are tests/test_cli.py's)"
    code = main([a.format(tmp=tmp_path, phantoms=phantoms) for a in args])
    assert code != 0
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], lines
    assert not (tmp_path / "run").exists()


def test_bts_train_starts_from_a_trained_model(first_run, phantoms, tmp_path):
    source = first_run[0] / "best.keras"
    out = tmp_path / "warm"
    result = bts("train", phantoms, "--out", out, "--depth", "2", "--base-filters", "4", "--patch-size", "16", "16", "16",
                 "--epochs", "1", "--batch-size", "2", "--learning-rate", "1e-9", "--outputs", "regions", "--loss", "dice_bce",
                 "--init-from", source)
    assert result.returncode == 0, result.stderr[-3000:]
    trained, start = keras.models.load_model(out / "last.keras"), keras.models.load_model(source)
    for name in ("down0_conv1", "logits"):
        for mine, theirs in zip(trained.get_layer(name).get_weights(), start.get_layer(name).get_weights(), strict=True):
            np.testing.assert_allclose(mine, theirs, atol=1e-6)  # a step at 1e-9 moves nothing: it started from the source
    fresh = unet_model_3d(soft_dice_loss, (4, None, None, None), depth=2, n_base_filters=4)
    assert not np.allclose(fresh.get_layer("down0_conv1").get_weights()[0], start.get_layer("down0_conv1").get_weights()[0])
    args = json.loads((out / "train_args.json").read_text(encoding="utf-8"))
    assert args["init_from"] == str(source) and args["init_sha256"] == hashlib.sha256(source.read_bytes()).hexdigest()
    deeper = lambda: copy_weights(unet_model_3d(soft_dice_loss, (4, None, None, None), depth=3, n_base_filters=4), start)
    with pytest.raises(ValueError, match="not the architecture"):
        train(deeper, VolumeDataGenerator(phantoms, "train"), epochs=1, out_dir=tmp_path / "wrong", verbose=0)
    assert not (tmp_path / "wrong").exists()  # refused before the run folder was made

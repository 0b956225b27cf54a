"Names that changed keep working for one release: the old keyword or attribute gives the same result, with a warning naming the new one"
import inspect, warnings

import numpy as np
import pytest

from bts_course import data, dataset, demo, inference, labels, pretrained, training


RENAMED = [  # (function, old keyword, new keyword)
    (pretrained.read_card, "folder", "model_dir"),
    (pretrained.check_weights, "folder", "model_dir"),
    (pretrained.load_pretrained, "folder", "model_dir"),
    (pretrained.calibrate_model, "folder", "model_dir"),
    (pretrained.calibrate_model, "cases", "paths"),
    (labels.label_channels, "labels", "label"),
    (inference.window_candidates, "shape", "box_shape"),
    (inference.choose_window, "shape", "box_shape"),
    (training.read_config, "data_dir", "patch_dir"),
    (training.patch_files, "data_dir", "patch_dir"),
    (training.patch_files, "split", "subset"),
    (training.VolumeDataGenerator, "data_dir", "patch_dir"),
    (training.VolumeDataGenerator, "split", "subset"),
    (dataset.write_course_dataset, "dest", "patch_dir"),
    (dataset.build_patch_dataset, "dest", "patch_dir"),
    (demo.write_phantom_dataset, "dest", "patch_dir"),
]


@pytest.mark.parametrize("fn, old, new", RENAMED, ids=lambda v: getattr(v, "__name__", v))
def test_the_signature_shows_the_new_name_and_the_old_one_is_refused_beside_it(fn, old, new):
    parameters = inspect.signature(fn).parameters
    assert new in parameters and old not in parameters
    with pytest.raises(TypeError, match=f"pass {new}= only"):  # refused before any work: the function is not run
        fn(**{old: 1, new: 2})


@pytest.fixture(scope="module")
def patch_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("patches")
    return dataset.write_course_dataset(root, data.example_patches())


def deprecated(call):
    "What `call()` returns, and the one DeprecationWarning it gave"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = call()
    messages = [str(w.message) for w in caught if w.category is DeprecationWarning]
    assert len(messages) == 1, messages
    return result, messages[0]


def test_old_keywords_still_work(patch_dir):
    files, message = deprecated(lambda: training.patch_files(data_dir=patch_dir, subset="valid"))
    assert files == training.patch_files(patch_dir, "valid") and len(files) == 1
    assert "patch_files(" in message and "is now patch_files(" in message
    config, message = deprecated(lambda: training.read_config(data_dir=patch_dir))
    assert config == training.read_config(patch_dir)
    assert message == "read_config(data_dir=...) is now read_config(patch_dir=...); use the new name"
    card, _ = deprecated(lambda: pretrained.read_card(folder=None))
    assert card == pretrained.read_card()
    label = np.array([[[0, 1, 2, 3]]], np.uint8)
    channels, message = deprecated(lambda: labels.label_channels(labels=label, outputs="regions"))
    np.testing.assert_array_equal(channels, labels.label_channels(label, "regions"))
    assert message == "label_channels(labels=...) is now label_channels(label=...); use the new name"
    window, _ = deprecated(lambda: inference.choose_window(shape=(100, 120, 90), divisor=(8, 8, 8)))
    assert window == inference.choose_window((100, 120, 90), (8, 8, 8))


def test_old_attribute_names_still_work(patch_dir):
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        gen = training.VolumeDataGenerator(data_dir=patch_dir, split="valid")
    assert (gen.patch_dir, gen.subset, len(gen.files)) == (patch_dir, "valid", 1)
    assert deprecated(lambda: gen.split) == ("valid", "VolumeDataGenerator.split is now VolumeDataGenerator.subset; use the new name")
    assert deprecated(lambda: gen.data_dir)[0] == patch_dir
    patch = data.example_patches()[-1]
    assert deprecated(lambda: patch.split) == (patch.subset, "Patch.split is now Patch.subset; use the new name")
    assert deprecated(lambda: data.N_CLASSES) == (data.N_CODES, "bts_course.data.N_CLASSES is now bts_course.data.N_CODES; "
                                                                "import it from there")


def _public_callables():
    "(qualified name, callable) of every public function, class and method the package's modules export"
    import importlib, pkgutil, bts_course
    for info in pkgutil.iter_modules(bts_course.__path__):
        if info.name.startswith("_") or info.name == "cli": continue
        module = importlib.import_module(f"bts_course.{info.name}")
        for name in getattr(module, "__all__", []):
            obj = getattr(module, name)
            if inspect.isclass(obj):
                yield f"{info.name}.{name}", obj
                for attr, member in vars(obj).items():
                    if inspect.isfunction(member) and not attr.startswith("_"): yield f"{info.name}.{name}.{attr}", member
            elif callable(obj): yield f"{info.name}.{name}", obj


def test_randomness_has_two_names_with_one_meaning_each():
    """`seed`: an int that keys one or more derived streams (`[seed, epoch, i]`, a case per seed, SimpleITK's sampler);
    `rng`: the one stream a function draws from, a `np.random.Generator` or a seed for one (NumPy's SPEC 7). No third
    name (`random_state`, `random_seed`, `generator`) and no `seed` that takes a generator."""
    seen = {"seed": [], "rng": []}
    for where, fn in _public_callables():
        try: parameters = inspect.signature(fn).parameters
        except (TypeError, ValueError): continue
        for name, p in parameters.items():
            assert name not in ("random_state", "random_seed", "generator"), (where, name)
            annotation = str(p.annotation)
            if name == "seed":
                seen["seed"].append(where)
                assert "Generator" not in annotation and (p.default is p.empty or p.default is None or isinstance(p.default, int)), where
            if name == "rng":
                seen["rng"].append(where)
                assert "Generator" in annotation or p.annotation is p.empty, where
    assert len(seen["seed"]) >= 5 and len(seen["rng"]) >= 3, seen   # both conventions are in use, as documented

"The forward-pass cost model (bts_course.costs): what a pass holds and computes, the memory budget, the fitted and measured cost, its cache"
import json

import pytest

from bts_course.model import unet_model_3d  # imports TensorFlow quietly
from bts_course.metrics import soft_dice_loss
from bts_course import costs

from stand_ins import pointwise_model, tiny_unet


def course_unet():
    return unet_model_3d(soft_dice_loss, input_shape=(4, None, None, None))


def voxel_cost(model):
    "A cost model in which every voxel costs the same: no timing"
    return costs.ForwardCost(costs.conv_layers(model), per_pass=0.0, per_gflop=1.0)


# ---------------------------------------------------------------- the memory budget
def test_default_budget_comes_from_the_machine(monkeypatch):
    monkeypatch.setattr(costs, "_available_bytes", lambda: 10e9)
    assert costs.default_memory_gb() == pytest.approx(7.5)
    monkeypatch.setattr(costs, "_available_bytes", lambda: 100e9)
    assert costs.default_memory_gb() == 16.0  # capped


def test_available_memory_matches_psutil():
    psutil = pytest.importorskip("psutil")
    assert costs._available_bytes() == pytest.approx(psutil.virtual_memory().available, rel=0.2)


# ---------------------------------------------------------------- the forward-pass cost model
def test_conv_layers_count_the_network_s_arithmetic():
    m = course_unet()
    layers = costs.conv_layers(m)
    assert len(layers) == 15 and all(isinstance(layer, costs.ConvLayer) for layer in layers)
    assert sum(layer.macs for layer in layers) == pytest.approx(905664)  # 371 GMAC per 160x160x16 patch
    assert layers[-1].kernel == (1, 1, 1) and layers[0].scale == (1, 1, 1)
    (pointwise,) = costs.conv_layers(pointwise_model())
    assert (pointwise.macs, pointwise.bytes, pointwise.scale, pointwise.kernel) == (12.0, 28.0, (1, 1, 1), (1, 1, 1))  # 4 x 3 multiply-adds; 4 + 3 floats in and out
    cost = voxel_cost(m)
    all_, uncached, face = cost.gflops((160, 160, 16))
    assert all_ == pytest.approx(2 * 905664 * 160 * 160 * 16 / 1e9) and 0 < uncached < all_ and 0 < face < all_
    assert cost.gflops((32, 32, 32), batch_size=3)[0] == pytest.approx(3 * cost.gflops((32, 32, 32))[0])
    # a thin window puts more of its work on faces than a cube; a big one more beyond the cache than a small one
    share = lambda w, k: cost.gflops(w)[k] / cost.gflops(w)[0]
    assert share((160, 160, 16), 2) > 2 * share((144, 176, 128), 2) and share((144, 176, 128), 1) > share((24, 24, 24), 1)


def test_cost_fit_recovers_known_coefficients_and_predicts_wall_time():
    layers = costs.conv_layers(tiny_unet())
    truth = costs.ForwardCost(layers, per_pass=0.003, per_gflop=0.5, per_gflop_uncached=0.2, per_gflop_face=0.1, cache_bytes=1e5,
                            parallelism=1.5)
    probes = costs.probe_windows(layers, (2, 2, 2), cache_bytes=1e5)
    assert len(probes) == 5 and probes[4] == (probes[1][0], 2) and probes[2][0][2] == 2  # a slab one divisor thin
    timed = [(w, b, truth.clock_seconds(w, b), truth.seconds(w, b)) for w, b in probes]
    fit = costs.fit_forward_cost(layers, timed, cache_bytes=1e5, parallelism=1.5)
    for name in costs.COST_TERMS: assert getattr(fit, name) == pytest.approx(getattr(truth, name), rel=1e-4, abs=1e-9)
    assert fit.fit_error < 1e-6 and fit.seconds((64, 64, 64)) == pytest.approx(truth.seconds((64, 64, 64)), rel=1e-4)
    # wall time: the cost per pass as it is, the work shared among the threads
    assert truth.seconds((8, 8, 8)) == pytest.approx(0.003 + (truth.clock_seconds((8, 8, 8)) - 0.003) / 1.5)
    # noise can never make a coefficient negative
    noisy = [(w, b, t * (1.3 if i % 2 else 0.7), wall) for i, (w, b, t, wall) in enumerate(timed)]
    assert all(getattr(costs.fit_forward_cost(layers, noisy), name) >= 0 for name in costs.COST_TERMS)
    with pytest.raises(ValueError, match="at least 2 timed passes"):
        costs.fit_forward_cost(layers, timed[:1])


def test_measured_cost_has_the_expected_form():  # what a measurement gives, not how fast this machine is
    m = tiny_unet()
    cost = costs.measure_forward_cost(m, repeats=1)
    assert cost.clock in ("cpu", "wall") and len(cost.probes) == 5
    assert 1 <= cost.parallelism <= max(1, costs._threads())
    assert all(getattr(cost, name) >= 0 for name in costs.COST_TERMS) and cost.per_gflop + cost.per_gflop_uncached > 0
    assert cost.seconds((64, 64, 64)) > cost.seconds((16, 16, 16)) > 0


def test_model_fingerprint_is_the_architecture_not_the_weights():
    a, b = tiny_unet(seed=0), tiny_unet(seed=1)
    assert costs.model_fingerprint(a) == costs.model_fingerprint(b)
    assert costs.model_fingerprint(a) == costs.model_fingerprint(tiny_unet((4, 16, 16, 16)))  # a fixed input size: the same network
    assert costs.model_fingerprint(a) != costs.model_fingerprint(pointwise_model())
    assert costs.model_fingerprint(pointwise_model()) != costs.model_fingerprint(pointwise_model(channels=2))
    machine = costs.machine_fingerprint()
    assert {"processor", "cores", "threads", "tensorflow", "accelerators"} <= set(machine) and json.loads(json.dumps(machine)) == machine


@pytest.fixture
def counted_measure(monkeypatch):
    "measure_forward_cost replaced by a deterministic stand-in that counts its calls"
    calls = []
    def fake(model, repeats=3):
        calls.append(costs.model_fingerprint(model))
        layers = costs.conv_layers(model)
        return costs.fit_forward_cost(layers, [((8, 8, 8), 1, 0.01 + len(calls) * 1e-3, 0.01), ((16, 16, 16), 1, 0.05, 0.03)])
    monkeypatch.setattr(costs, "measure_forward_cost", fake)
    return calls


def test_forward_cost_is_measured_once_per_model_and_machine(tmp_path, counted_measure, monkeypatch):
    path = tmp_path / "costs.json"
    a, b = tiny_unet(), pointwise_model()
    first = costs.forward_cost(a, path)
    assert costs.forward_cost(a, path) == first and counted_measure == [costs.model_fingerprint(a)]  # kept: not measured again
    assert costs.forward_cost(tiny_unet(seed=3), path) == first  # other weights, the same network
    costs.forward_cost(b, path)  # another model: never the first one's cost
    assert len(counted_measure) == 2
    entries = json.loads(path.read_text(encoding="utf-8"))["entries"]
    assert sorted(e["model"] for e in entries.values()) == sorted([costs.model_fingerprint(a), costs.model_fingerprint(b)])
    # another machine: the entries kept for this one are not used, and stay
    monkeypatch.setattr(costs, "machine_fingerprint", lambda: {"processor": "another", "cores": 64})
    costs.forward_cost(a, path)
    assert len(counted_measure) == 3 and len(json.loads(path.read_text(encoding="utf-8"))["entries"]) == 3


def test_a_tampered_entry_under_the_right_key_is_not_used(tmp_path, counted_measure):
    path = tmp_path / "costs.json"
    m = tiny_unet()
    costs.forward_cost(m, path)
    data = json.loads(path.read_text(encoding="utf-8"))
    (key, entry), = data["entries"].items()
    entry["machine"] = {**entry["machine"], "processor": "someone else's"}  # the key says this machine, the entry another
    path.write_text(json.dumps(data), encoding="utf-8")
    costs.forward_cost(m, path)
    assert len(counted_measure) == 2


@pytest.mark.parametrize("content", ["{not json", "[1, 2]", '{"format": 99, "entries": {}}', "\udcff".encode("utf-8", "surrogatepass")])
def test_a_corrupt_cost_cache_is_ignored_with_one_note_and_rebuilt(tmp_path, counted_measure, content):
    path = tmp_path / "costs.json"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.warns(UserWarning, match="ignoring the unreadable forward-cost cache") as notes:
        cost = costs.forward_cost(tiny_unet(), path)
    assert len(notes) == 1 and "\n" not in str(notes[0].message) and cost.per_gflop >= 0
    assert list(json.loads(path.read_text(encoding="utf-8"))["entries"].values())[0]["model"] == costs.model_fingerprint(tiny_unet())
    assert costs.forward_cost(tiny_unet(), path) == cost and len(counted_measure) == 1  # rebuilt: read back next time


def test_a_malformed_entry_is_measured_again(tmp_path, counted_measure):
    path = tmp_path / "costs.json"
    m = tiny_unet()
    costs.forward_cost(m, path)
    data = json.loads(path.read_text(encoding="utf-8"))
    for entry in data["entries"].values(): entry["coefficients"]["per_gflop"] = -1
    path.write_text(json.dumps(data), encoding="utf-8")
    with pytest.warns(UserWarning, match="malformed forward-cost entry"):
        costs.forward_cost(m, path)
    assert len(counted_measure) == 2 and json.loads(path.read_text(encoding="utf-8"))["entries"][next(iter(data["entries"]))]["coefficients"]["per_gflop"] >= 0


def test_cost_cache_location(monkeypatch, tmp_path):
    monkeypatch.setenv("BTS_CACHE_DIR", str(tmp_path))
    assert costs.cost_cache_file() == tmp_path / "forward_costs.json"
    monkeypatch.delenv("BTS_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert costs.cost_cache_file() == tmp_path / "xdg" / "bts_course" / "forward_costs.json"

"""A model whose dense outputs peak between 2**15 and the fp16 maximum: fine on the GPU, broken on
the Neural Engine's MAC port, and the cliff scanner names the layer; placement under each
compute-units choice."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("tensorflow")
ct = pytest.importorskip("coremltools")

import _emu_helpers as H  # noqa: E402


@pytest.fixture(scope="module")
def hot_model():
    import keras

    rng = np.random.default_rng(4)
    inputs = keras.Input((8,))
    hot = keras.layers.Dense(16, name="hot", activation="relu")
    cool = keras.layers.Dense(4, name="cool")
    model = keras.Model(inputs, keras.layers.Softmax()(cool(hot(inputs))))
    hot.set_weights([(3000 + 1500 * rng.standard_normal((8, 16))).astype(np.float32), np.zeros(16, np.float32)])
    cool.set_weights([(1e-3 * rng.standard_normal((16, 4))).astype(np.float32), np.zeros(4, np.float32)])
    x = rng.uniform(0.5, 1.6, (256, 8)).astype(np.float32)
    return model, x


def _agreement(program, model, x, units, device="m1"):
    from precision_sweep.emulator import Emulator

    (got,) = Emulator(program, compute_units=units, device=device).predict({"input_0": x}).values()
    return float(np.mean(np.argmax(got, -1) == np.argmax(np.asarray(model(x)), -1)))


def test_outputs_past_the_mac_ceiling_break_the_engine_but_not_the_gpu(hot_model):
    from precision_sweep.data.layers import LayerMapper
    from precision_sweep.diagnose.cliffs import cliff_report
    from precision_sweep.emulator import Emulator

    model, x = hot_model
    peak = float(np.max(np.asarray(model.get_layer("hot")(x))))
    assert 32768 < peak < 65504  # the band the ceiling cuts but fp16 storage holds
    fp16 = H.convert(model, [x.shape], precision="fp16")
    fp32 = H.convert(model, [x.shape], precision="fp32")
    assert _agreement(fp16, model, x, "cpu_and_gpu") >= 0.99
    assert _agreement(fp16, model, x, "cpu_and_ne") < 0.9
    mapper = LayerMapper.from_keras(model)
    on_ane = cliff_report(fp32, x[:64], Emulator(fp16, compute_units="cpu_and_ne"), "m1", mapper)
    ceiling = on_ane[on_ane["cliff"] == "mac_ceiling"]
    assert list(ceiling["layer"]) == ["hot"], on_ane
    assert ceiling["detail"].iloc[0].startswith("peak ") and "`hot`" in ceiling["detail"].iloc[0]
    assert "ceiling 32,768" in ceiling["detail"].iloc[0]
    on_gpu = cliff_report(fp32, x[:64], Emulator(fp16, compute_units="cpu_and_gpu"), "m1", mapper)
    assert on_gpu.empty  # no ANE op, nothing above the fp16 maximum


def test_placement_follows_the_compute_units_and_the_generation():
    from coremltools.converters.mil import Builder as mb
    from coremltools.converters.mil.mil import types

    from precision_sweep.emulator import Emulator

    @mb.program(input_specs=[mb.TensorSpec(shape=(1, 4, 8, 8), dtype=types.fp16)], opset_version=ct.target.iOS17)
    def program(x):
        y = mb.conv(x=x, weight=np.ones((4, 4, 3, 3), np.float16), pad_type="same")
        y = mb.resize_bilinear(x=y, target_size_height=16, target_size_width=16)  # native from M2
        y = mb.sin(x=y)  # native from M3
        return mb.cast(x=y, dtype="fp32")

    def units(compute_units, device):
        emulator = Emulator(program, compute_units=compute_units, device=device)
        return {p["op_type"]: (p["unit"], p["reason"]) for p in emulator.placements()}, emulator.placement_fractions()

    m1, fractions = units("all", "m1")
    assert m1["conv"][0] == "ane" and m1["resize_bilinear"][0] == "gpu" and m1["sin"][0] == "gpu"
    assert "from m2" in m1["resize_bilinear"][1] and m1["cast"][0] == "gpu"  # fp32 output
    assert fractions["ane_mac_fraction"] == 1.0 and 0 < fractions["ane_op_fraction"] < 1
    m5, _ = units("cpu_and_ne", "m5")
    assert m5["resize_bilinear"][0] == "ane" and m5["sin"][0] == "ane" and m5["cast"][0] == "cpu"
    only_gpu, fractions = units("cpu_and_gpu", "m1")
    assert {unit for unit, _ in only_gpu.values()} == {"gpu"} and fractions["ane_op_fraction"] == 0.0


def test_unknown_compute_units_or_device_lists_the_choices():
    from precision_sweep.emulator import Emulator

    program = H.convert(__import__("keras").Sequential([__import__("keras").Input((2,)), __import__("keras").layers.Dense(1)]), [(1, 2)])
    with pytest.raises(ValueError, match="cpu_only, cpu_and_gpu, cpu_and_ne, all"):
        Emulator(program, compute_units="gpu")
    with pytest.raises(ValueError, match="m1, m2, m5"):
        Emulator(program, device="m9")


def test_the_op_statistics_are_read_back_from_disk_without_running_the_program(hot_model, tmp_path, monkeypatch):
    """With a stats folder the FP32 program's per-op statistics are written once as JSON; a new
    process (the in-process memo cleared) reads them without running the program, and the cliff
    table is the same."""
    from precision_sweep.data.layers import LayerMapper
    from precision_sweep.diagnose import cliffs
    from precision_sweep.emulator import Emulator, Execution

    model, x = hot_model
    fp16 = H.convert(model, [x.shape], precision="fp16")
    fp32 = tmp_path / "fp32.mlpackage"
    H.convert(model, [x.shape], precision="fp32").save(str(fp32))
    mapper = LayerMapper.from_keras(model)
    tmp_path = tmp_path / "stats"
    monkeypatch.setattr(cliffs, "_STATS_MEMO", {})
    first = cliffs.cliff_report(fp32, x[:64], Emulator(fp16, compute_units="cpu_and_ne"), "m1", mapper, stats_cache=tmp_path)
    [stored] = tmp_path.glob("opstats-*.json")
    monkeypatch.setattr(cliffs, "_STATS_MEMO", {})

    def not_run(*args, **kwargs):
        raise AssertionError("the FP32 program ran again")

    monkeypatch.setattr(Execution, "emulator", not_run)
    again = cliffs.cliff_report(fp32, x[:64], Emulator(fp16, compute_units="cpu_and_ne"), "m1", mapper, stats_cache=tmp_path)
    assert list(again["layer"]) == ["hot"]
    assert again.equals(first)
    # other samples are other statistics: a second entry, not the first read back
    monkeypatch.undo()
    monkeypatch.setattr(cliffs, "_STATS_MEMO", {})
    cliffs.cliff_report(fp32, x[64:128], Emulator(fp16, compute_units="cpu_and_ne"), "m1", mapper, stats_cache=tmp_path)
    assert len(list(tmp_path.glob("opstats-*.json"))) == 2 and stored.exists()

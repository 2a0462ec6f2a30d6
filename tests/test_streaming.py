"""Image folders streamed from their files (data/streamed.py, dataset.stream): the same numbers
as the images held in memory, a TF baseline that resumes at its first unsaved slice, and a
progress line with throughput and ETA. Real Keras models, real conversions, real MLflow
stores; the stop is a Ctrl-C raised after a fixed number of slices (not a timer)."""

from __future__ import annotations

import logging
import pickle
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent / "byo"))

from byo_helpers import image_cnn, write_image_folder  # noqa: E402
from sweep_testing import compose, mlflow_client  # noqa: E402

# Metrics that measure the run (time, memory), not the model: they differ between any two runs.
TIMING = ("seconds", "per_sample", "throughput", "_ms", "speed", "rss")


@pytest.fixture(scope="module")
def folder_and_model(tmp_path_factory):
    root = tmp_path_factory.mktemp("streamed")
    images = write_image_folder(root / "images", classes=("ant", "bee", "cow"), per_class=24, size=(16, 20))
    image_cnn(shape=(12, 12, 3), classes=3).save(root / "cnn.keras")
    return images, root / "cnn.keras"


def _config(outputs: Path, cache: Path, images: Path, model: Path, *extra: str):
    return compose([f"paths.outputs={outputs}", f"paths.cache={cache}", "runtime.progress=false",
                    "model=keras", f"model.path={model}", "dataset=image_folder", f"dataset.path={images}",
                    "dataset.test_size=0.75", "runtime.batch_size=8", "target=ios16", *extra])


def _job_run(outputs: Path):
    client = mlflow_client(outputs)
    runs = client.search_runs([client.get_experiment_by_name("precision-sweep").experiment_id])
    [job] = [r for r in runs if r.data.tags.get("precision_sweep.role") == "job"]
    return job


def test_streamed_samples_read_as_the_eager_load_reads_them(folder_and_model):
    from precision_sweep.data.images import list_image_folder, read_images
    from precision_sweep.data.streamed import Decoding, StreamedImages, rows

    images, _ = folder_and_model
    _, files, _ = list_image_folder(images)
    paths = [f for f, _ in files]
    eager = read_images(paths, (12, 12), "RGB", True, "center_crop")
    streamed = StreamedImages(tuple(paths), Decoding((12, 12), "RGB", True, "center_crop"))
    assert streamed.shape == eager.shape and streamed.dtype == eager.dtype and len(streamed) == len(eager)
    np.testing.assert_array_equal(streamed[5:17], eager[5:17])
    np.testing.assert_array_equal(streamed[7], eager[7])
    index = np.array([40, 3, 3, 11])
    np.testing.assert_array_equal(rows(streamed, index)[:], eager[index])  # taken unread, then read
    scaled = streamed.map(lambda x: x / 255, "scale 1/255")
    np.testing.assert_array_equal(np.asarray(scaled), eager / 255)
    again = pickle.loads(pickle.dumps(streamed))  # what a Ray shard receives
    np.testing.assert_array_equal(again[:4], eager[:4])
    assert scaled.digest() != streamed.digest()  # the steps are part of the content


def test_a_streamed_digest_follows_the_files_bytes(tmp_path):
    from precision_sweep.data.images import list_image_folder
    from precision_sweep.data.streamed import Decoding, StreamedImages

    images = write_image_folder(tmp_path / "images", per_class=2, size=(8, 8))
    decoding = Decoding((8, 8), "RGB", True, "scale_fill")

    def digest():
        return StreamedImages(tuple(f for f, _ in list_image_folder(images)[1]), decoding).digest()

    before = digest()
    assert digest() == before
    from PIL import Image

    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(images / "dog" / "001.png")
    assert digest() != before


@pytest.mark.parametrize("interface", ["tensor", "image_classifier"])
def test_a_streamed_image_folder_job_records_the_numbers_of_the_in_memory_one(folder_and_model, tmp_path, interface):
    """The job's metrics, bit for bit, whether the images are decoded first or read batch by
    batch: the TF baseline, the program's evaluation, the paired statistics and the diagnosis
    (an image input's feed and its preprocessing doctor included)."""
    from precision_sweep.job import run_job

    images, model = folder_and_model
    extra = ["precision=fp16", "model.input_type=image", "model.classifier=true"] if interface == "image_classifier" else ["precision=fp16"]
    metrics = {}
    for stream in ("false", "true"):
        outputs = tmp_path / f"outputs-{stream}"
        outputs.mkdir()
        run_job(_config(outputs, tmp_path / f"cache-{stream}", images, model, f"dataset.stream={stream}", *extra))
        job = _job_run(outputs)
        assert job.info.status == "FINISHED"
        metrics[stream] = {k: v for k, v in job.data.metrics.items() if not any(t in k for t in TIMING)}
    assert metrics["true"]["n_samples"] == 54
    assert {"accuracy", "agreement", "delta_pp"} <= set(metrics["true"])
    assert metrics["true"] == metrics["false"]


def test_a_streamed_baseline_stopped_mid_dataset_resumes_at_its_first_unsaved_slice(folder_and_model, tmp_path, monkeypatch):
    import precision_sweep.baseline as baseline
    from precision_sweep.data import load_inputs
    from precision_sweep.data.streamed import StreamedImages

    images, model_path = folder_and_model
    cfg = _config(tmp_path / "outputs", tmp_path / "cache", images, model_path, "dataset.stream=true")
    dataset, model = load_inputs(cfg.model, cfg.dataset, tmp_path / "cache")
    assert isinstance(dataset.x_test, StreamedImages)
    monkeypatch.setattr(baseline, "STREAMED_SLICE", 10)  # 54 samples: 6 slices
    predict = baseline.predict_probabilities
    sizes: list = []

    def counted(model, x, stop_after=None):
        if stop_after is not None and len(sizes) == stop_after:
            raise KeyboardInterrupt
        sizes.append(len(x))
        return predict(model, x)

    monkeypatch.setattr(baseline, "predict_probabilities", lambda m, x: counted(m, x, stop_after=4))
    with pytest.raises(KeyboardInterrupt):
        baseline.baseline_outputs(model, dataset.x_test, dataset.content_hash, tmp_path / "cache")
    assert sizes == [10, 10, 10, 10]
    sizes.clear()
    monkeypatch.setattr(baseline, "predict_probabilities", lambda m, x: counted(m, x))
    resumed = baseline.baseline_outputs(model, dataset.x_test, dataset.content_hash, tmp_path / "cache")
    assert sizes == [10, 4]  # only the slices not saved
    assert not list((tmp_path / "cache" / "baseline").glob("*.slices"))  # removed once the whole is saved
    whole = predict(model, np.asarray(dataset.x_test))
    np.testing.assert_allclose(resumed, whole, rtol=0, atol=1e-6)
    assert resumed.shape == (54, 3)


def test_the_progress_line_gives_samples_done_throughput_and_eta(caplog):
    from precision_sweep.runtime.progress import SampleProgress

    now = [0.0]
    meter = SampleProgress("fp16 cpu_only", 50_000, bar=False, every=30.0, clock=lambda: now[0])
    with caplog.at_level(logging.INFO, logger="precision_sweep.runtime.progress"):
        meter.update(5_000, evaluated=False)  # read back from a stopped run: not in the throughput
        for _ in range(20):
            now[0] += 2.0
            meter.update(500)  # 250 images a second
        meter.close()
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2  # one at 30 s, one at the end
    assert "12,500" not in lines[0] and "12500/50000" in lines[0] and "250.00img/s" in lines[0]
    assert "<02:30" in lines[0]  # 37,500 left at 250 a second
    assert "15000/50000" in lines[1]


def test_stream_on_a_source_without_image_files_is_refused_with_the_fix():
    from precision_sweep.data.loading import load_dataset
    from precision_sweep.errors import UserInputError

    with pytest.raises(UserInputError, match=r"dataset.stream=true reads image files .* Remove dataset.stream"):
        load_dataset(compose(["dataset=digits", "dataset.stream=true"]).dataset)


@pytest.mark.parametrize("grid", [["sweep=default"], []], ids=["sweep", "single-run"])
def test_stream_on_the_embedded_digits_stops_the_command_before_any_job(tmp_path, grid):
    from sweep_testing import run_cli

    result = run_cli(["precision-sweep", *grid, "dataset.stream=true"], cwd=tmp_path)
    assert result.returncode == 2, result.stderr[-2000:]
    message = " ".join(result.stderr.split())
    assert "precision-sweep: error: dataset.stream=true reads image files a batch at a time" in message
    assert "Traceback" not in result.stderr and "job started" not in result.stderr
    assert list(tmp_path.iterdir()) == []  # no store, no run folder: nothing ran

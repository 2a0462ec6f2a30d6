"""Ctrl-C and SIGTERM inside a job (limits.stops_raise, limits.stop_in_chain).

Real signals to this process's main thread. A stop that a library's bare ``except:`` swallows is
raised again until the block is left; a stop that a library's cleanup turned into another error
is still recognised as a stop, and the job run is closed KILLED with the stop's class.
"""

from __future__ import annotations

import os
import signal
import threading

import pytest

from precision_sweep import limits
from precision_sweep.limits import JobTerminated, stop_in_chain, stops_raise


@pytest.fixture(autouse=True)
def _quick_retry(monkeypatch):
    monkeypatch.setattr(limits, "STOP_RETRY_SECONDS", 0.05)


def _swallow_then_wait(signum: int, raised: list) -> None:
    """Signal this process while inside a bare ``except:`` that swallows what is raised, as
    coremltools' ``_try_get_weights_dir_path`` does, then wait (for an event never set) until
    the stop is raised again."""
    try:
        os.kill(os.getpid(), signum)
        threading.Event().wait(0.5)  # the handler runs here, in the main thread
    except:  # noqa: E722 - the library's bare except under test
        raised.append("swallowed")
    threading.Event().wait(30)


@pytest.mark.parametrize(("signum", "stop"), [(signal.SIGINT, KeyboardInterrupt), (signal.SIGTERM, JobTerminated)])
def test_a_stop_swallowed_by_a_bare_except_is_raised_again(signum, stop):
    before = signal.getsignal(signum)
    raised: list = []
    with pytest.raises(stop):
        with stops_raise():
            _swallow_then_wait(signum, raised)
    assert raised == ["swallowed"]  # the first one was swallowed, the one that left the block was raised again
    assert signal.getsignal(signum) is before  # the handler is restored


def test_nothing_is_raised_again_once_the_block_is_left():
    with pytest.raises(KeyboardInterrupt):
        with stops_raise():
            os.kill(os.getpid(), signal.SIGINT)
            threading.Event().wait(0.5)
    # the watcher has been joined: no repeat can land after the block
    assert not [t for t in threading.enumerate() if t.name == "precision-sweep-stop-repeat"]
    threading.Event().wait(0.2)  # four retry periods: nothing arrives


def test_a_stop_turned_into_another_error_is_found_in_the_chain():
    def journal_release():
        try:
            raise KeyboardInterrupt
        finally:
            raise FileNotFoundError("lock file vanished")  # what Optuna's lock raised here

    with pytest.raises(FileNotFoundError) as info:
        journal_release()
    assert isinstance(stop_in_chain(info.value), KeyboardInterrupt)
    assert stop_in_chain(RuntimeError("plain failure")) is None
    try:
        try:
            raise JobTerminated("the job received SIGTERM")
        except JobTerminated as exc:
            raise RuntimeError("wrapped") from exc
    except RuntimeError as wrapped:
        assert isinstance(stop_in_chain(wrapped), JobTerminated)


def test_a_job_stopped_through_a_library_error_is_closed_killed(tmp_path):
    from mlflow.tracking import MlflowClient

    from precision_sweep.tracking.job_run import JobRun

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.create_experiment("stops", artifact_location=(tmp_path / "artifacts").as_uri())
    run = JobRun(client, experiment, None, "stopped job")
    try:
        try:
            raise KeyboardInterrupt
        finally:
            raise FileNotFoundError("lock file vanished")
    except FileNotFoundError as exc:
        run.fail(exc)
    stored = client.get_run(run.run_id)
    assert stored.info.status == "KILLED"
    assert stored.data.tags["error_class"] == "KeyboardInterrupt"


def test_a_stop_swallowed_before_a_library_fails_on_its_own_error_closes_the_job_killed(outputs, shared_cache, monkeypatch):
    """Ctrl-C lands in a library's bare ``except:``, which goes on with a half-set state and fails
    on an error of its own that does not chain the stop (seen in CI: a search trial's conversion
    then failed), before the stop is raised again: the job was still stopped, so its run is
    KILLED with KeyboardInterrupt and the stop leaves run_job."""
    from precision_sweep import runtime as runtime_module
    from precision_sweep.job import run_job
    from sweep_testing import compose, mlflow_client

    def swallow_then_fail(*args, **kwargs):
        try:
            os.kill(os.getpid(), signal.SIGINT)
            threading.Event().wait(0.5)  # the handler raises here
        except:  # noqa: E722 - the library's bare except under test
            pass
        raise RuntimeError("weights directory not found")  # raised outside the except: no chain

    monkeypatch.setattr(limits, "STOP_RETRY_SECONDS", 600)  # the error, not a repeat, leaves the block
    monkeypatch.setattr(runtime_module, "run_batches", swallow_then_fail)
    with pytest.raises(KeyboardInterrupt):
        run_job(compose([f"paths.outputs={outputs}", f"paths.cache={shared_cache}", "runtime.progress=false",
                         "precision=fp32"]))
    client = mlflow_client(outputs)
    [run] = client.search_runs([client.get_experiment_by_name("precision-sweep").experiment_id])
    assert run.info.status == "KILLED"
    assert run.data.tags["error_class"] == "KeyboardInterrupt"
    error = client.download_artifacts(run.info.run_id, "error.txt", str(outputs))
    assert "weights directory not found" in open(error).read()  # what the library raised is kept

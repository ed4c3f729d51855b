"""sklearn-ben's configuration: per context, per thread, validated."""

import threading

import pytest

from sklearn_ben._config import config_context, get_config, set_config


def test_config_defaults_to_warn():
    assert get_config() == {"on_missing_metadata": "warn"}


def test_config_context_restores_the_previous_value():
    with config_context(on_missing_metadata="raise"):
        assert get_config()["on_missing_metadata"] == "raise"
        with config_context(on_missing_metadata="warn"):
            assert get_config()["on_missing_metadata"] == "warn"
        assert get_config()["on_missing_metadata"] == "raise"
    assert get_config()["on_missing_metadata"] == "warn"


def test_config_context_restores_after_an_exception():
    with pytest.raises(RuntimeError, match="boom"):
        with config_context(on_missing_metadata="raise"):
            raise RuntimeError("boom")
    assert get_config()["on_missing_metadata"] == "warn"


def test_config_get_config_returns_a_copy():
    get_config()["on_missing_metadata"] = "raise"
    assert get_config()["on_missing_metadata"] == "warn"


@pytest.mark.parametrize("setter", [set_config, config_context])
def test_config_rejects_unknown_values(setter):
    with pytest.raises(ValueError, match="on_missing_metadata"):
        with config_context():
            result = setter(on_missing_metadata="ignore")
            if setter is config_context:
                with result:
                    pass


def test_config_context_is_isolated_between_threads():
    barrier = threading.Barrier(2, timeout=10)
    seen = {}

    def worker(name, value):
        with config_context(on_missing_metadata=value):
            barrier.wait()  # both threads are inside their context now
            seen[name] = get_config()["on_missing_metadata"]
            barrier.wait()

    threads = [
        threading.Thread(target=worker, args=("a", "raise")),
        threading.Thread(target=worker, args=("b", "warn")),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert seen == {"a": "raise", "b": "warn"}
    assert get_config()["on_missing_metadata"] == "warn"


def test_config_set_in_one_thread_does_not_leak_into_another():
    seen = {}

    def setter():
        set_config(on_missing_metadata="raise")
        seen["setter"] = get_config()["on_missing_metadata"]

    thread = threading.Thread(target=setter)
    thread.start()
    thread.join()
    assert seen["setter"] == "raise"
    assert get_config()["on_missing_metadata"] == "warn"

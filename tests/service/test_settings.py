from __future__ import annotations

from pathlib import Path

import pytest

from service import settings as settings_module
from service.settings import Settings, SettingsError

CORES = 8  # what `available_cpus` reports in the tests that split cores (any machine)


@pytest.fixture
def eight_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    """The pool size follows the cores this process may use: pin them, so the expected sizes
    are known numbers rather than the same division the code does."""
    monkeypatch.setattr(settings_module, "available_cpus", lambda: CORES)


def test_defaults_without_environment(eight_cores: None) -> None:
    settings = Settings.from_env({})
    assert settings.bundles == (Path("models/sentiment-3class"),) and settings.bundle is None
    assert (settings.host, settings.port, settings.workers) == ("127.0.0.1", 8000, 1)
    assert settings.max_body_bytes == 65536 and settings.max_texts == 64
    assert settings.api_key is None
    assert settings.threads == 1 and settings.pool_size == 8  # one single-threaded run per core


def test_reads_every_prefixed_variable(eight_cores: None) -> None:
    env = {
        "SENTIMENT_BUNDLE": "/b",
        "SENTIMENT_PORT": "9001",
        "SENTIMENT_WORKERS": "2",
        "SENTIMENT_MAX_TOKENS": "1024",
        "SENTIMENT_API_KEY": "s3cret",
        "SENTIMENT_ACCESS_LOG": "off",
        "SENTIMENT_LOG_LEVEL": "Warning",
        "SENTIMENT_THREADS": "",  # empty = default
    }
    settings = Settings.from_env(env)
    assert settings.bundles == (Path("/b"),) and settings.port == 9001 and settings.workers == 2
    assert settings.max_tokens == 1024
    assert settings.api_key == "s3cret" and settings.access_log is False
    assert settings.log_level == "warning"
    assert settings.threads == 1 and settings.pool_size == 4  # 8 cores over 2 workers


def test_bundles_are_a_comma_separated_list_the_first_being_the_default() -> None:
    settings = Settings.from_env({"SENTIMENT_BUNDLES": " models/a , /srv/b/ "})
    assert settings.bundles == (Path("models/a"), Path("/srv/b"))
    assert settings.public()["bundles"] == ["models/a", "/srv/b"]
    assert Settings.from_env({"SENTIMENT_BUNDLES": "models/a"}).bundles == (Path("models/a"),)
    assert Settings(bundles=("a", "b")).bundles == (Path("a"), Path("b"))  # str is fine too


def test_the_one_bundle_alias_must_agree_with_the_list() -> None:
    same = {"SENTIMENT_BUNDLE": "models/a/", "SENTIMENT_BUNDLES": "models/a"}
    assert Settings.from_env(same).bundles == (Path("models/a"),)
    with pytest.raises(SettingsError) as info:
        Settings.from_env({"SENTIMENT_BUNDLE": "models/a", "SENTIMENT_BUNDLES": "models/b"})
    assert "SENTIMENT_BUNDLE=models/a and SENTIMENT_BUNDLES=models/b disagree" in str(info.value)
    with pytest.raises(SettingsError, match="disagree"):  # the alias names one bundle only
        Settings(bundle=Path("models/a"), bundles=(Path("models/a"), Path("models/b")))


@pytest.mark.parametrize(
    ("raw", "needle"),
    [
        ("models/a,,models/b", "SENTIMENT_BUNDLES='models/a,,models/b': expected comma-separated"),
        ("models/a,", "found an empty entry"),
        ("models/a,models/b,models/a/", "SENTIMENT_BUNDLES lists models/a more than once"),
    ],
)
def test_bad_bundle_lists_fail_naming_the_variable(raw: str, needle: str) -> None:
    with pytest.raises(SettingsError) as info:
        Settings.from_env({"SENTIMENT_BUNDLES": raw})
    assert needle in str(info.value)


def test_overrides_replace_the_bundles_instead_of_conflicting() -> None:
    listed = Settings(bundles=(Path("a"), Path("b")))
    assert listed.with_overrides(bundle=Path("c")).bundles == (Path("c"),)
    alias = Settings(bundle=Path("a"))
    assert alias.with_overrides(bundles=(Path("b"), Path("c"))).bundles == (Path("b"), Path("c"))
    assert alias.with_overrides(port=1).bundles == (Path("a"),)


def test_cores_are_split_across_workers_runs_and_threads(eight_cores: None) -> None:
    assert Settings(workers=1).pool_size == 8  # one single-threaded run per core
    assert Settings(workers=2).pool_size == 4
    assert Settings(threads=2).pool_size == 4
    assert Settings(workers=3).pool_size == 2  # 8 // 3 cores each, rounded down
    assert Settings(threads=3).pool_size == 2
    assert Settings(workers=2, threads=3).pool_size == 1  # 4 cores a worker, 3 threads a run
    assert Settings(workers=16).pool_size == 1  # never zero
    assert Settings(threads=16).pool_size == 1
    assert Settings(threads=2, pool_size=3).pool_size == 3  # explicit wins


@pytest.mark.parametrize(
    ("env", "needle"),
    [
        ({"SENTIMENT_PORT": "eighty"}, "SENTIMENT_PORT='eighty': expected an integer"),
        ({"SENTIMENT_PORT": "tcp://10.0.0.1:8000"}, "enableServiceLinks"),
        ({"SENTIMENT_PORT": "70000"}, "SENTIMENT_PORT must be in 0..65535"),
        ({"SENTIMENT_LOG_LEVEL": "loud"}, "expected one of"),
        ({"SENTIMENT_WORKERS": "0"}, "SENTIMENT_WORKERS must be >= 1"),
        ({"SENTIMENT_OVERLOAD_SPARE": "-1"}, "SENTIMENT_OVERLOAD_SPARE must be >= 0"),
        ({"SENTIMENT_REQUEST_TIMEOUT_S": "nan"}, "finite"),
        ({"SENTIMENT_ACCESS_LOG": "maybe"}, "true/false"),
        ({"SENTIMENT_QUEUE_SIZE": "8"}, "SENTIMENT_QUEUE_SIZE must be >= SENTIMENT_MAX_TEXTS"),
        ({"SENTIMENT_API_KEY": "   x"}, None),  # stripped, still valid
        ({"SENTIMENT_REQUEST_TIMEOUT_S": "0"}, "SENTIMENT_REQUEST_TIMEOUT_S must be > 0"),
        ({"SENTIMENT_HEADER_TIMEOUT_S": "-1"}, "SENTIMENT_HEADER_TIMEOUT_S must be > 0"),
    ],
)
def test_bad_values_fail_with_the_variable_named(env: dict[str, str], needle: str | None) -> None:
    if needle is None:
        assert Settings.from_env(env).api_key == "x"
        return
    with pytest.raises(SettingsError) as info:
        Settings.from_env(env)
    assert needle in str(info.value)


def test_every_problem_is_reported_at_once() -> None:
    with pytest.raises(SettingsError) as info:
        Settings.from_env({"SENTIMENT_MAX_BATCH": "0", "SENTIMENT_MAX_TEXTS": "0"})
    assert "SENTIMENT_MAX_BATCH" in str(info.value) and "SENTIMENT_MAX_TEXTS" in str(info.value)


def test_overrides_win_and_public_view_masks_the_key(eight_cores: None) -> None:
    settings = Settings.from_env({"SENTIMENT_PORT": "1"}, port=2, api_key="k")
    assert settings.port == 2
    assert settings.public()["api_key"] == "***"
    assert settings.pool_size == 8
    assert settings.with_overrides(workers=2).pool_size == 4  # recomputed, not kept at 8
    assert settings.with_overrides(threads=4).pool_size == 2


def test_settings_are_frozen() -> None:
    with pytest.raises(AttributeError):
        Settings().port = 1  # type: ignore[misc]


def test_unknown_prefixed_variables_are_listed() -> None:
    env = {"SENTIMENT_MAXBATCH": "8", "SENTIMENT_PORT": "1", "OTHER": "x"}
    assert Settings.unknown_variables(env) == ["SENTIMENT_MAXBATCH"]


def test_the_shutdown_timeout_covers_the_longest_request() -> None:
    """A request admitted just before SIGTERM may wait one request timeout and run another."""
    assert Settings(request_timeout_s=10, shutdown_timeout_s=20).longest_request_s == 20
    with pytest.raises(SettingsError, match=r"SHUTDOWN_TIMEOUT_S \(15\) must be >= 2 x"):
        Settings(request_timeout_s=10, shutdown_timeout_s=15)
    with pytest.raises(SettingsError, match=r"SHUTDOWN_TIMEOUT_S \(30\) must be >= 2 x"):
        Settings(request_timeout_s=16)  # the default shutdown timeout, a longer request timeout

"""benchmarks/ledger.py: the load-balancer stage's bookkeeping. Every answer is ok or failed
(non-200, connection error or reset, timeout), versions are read from the header or the body,
and windows, series and switch times come out of the same entries."""

from __future__ import annotations

from benchmarks.ledger import Ledger, classify, series, served_by, summarize, version_of

BINARY = b'{"label":"Positive","score":0.9,"scores":{"Negative":0.1,"Positive":0.9},"model":"m"}'
THREE = (
    b'{"label":"Neutral","score":0.5,"scores":{"Negative":0.2,"Neutral":0.5,"Positive":0.3},'
    b'"truncated":false,"model":"m"}'
)


def test_every_kind_of_failure_has_its_class() -> None:
    assert classify(None) == "ok"
    assert classify("http_503") == "http"
    assert classify("http_200") == "http"  # a 200 without a label is not an answer
    assert classify("conn:ConnectionResetError") == "connection"
    assert classify("connect:ConnectionRefusedError") == "connection"
    assert classify("timeout") == "timeout"
    assert classify("client:KeyError") == "other"


def test_version_from_the_header_when_the_service_sends_it() -> None:
    head = b"http/1.1 200 ok\r\nx-model-version: sentiment@0123456789ab\r\nx-served-by: r2"
    assert version_of(head, BINARY) == "sentiment@0123456789ab"
    assert served_by(head) == "r2"


def test_version_from_the_labels_without_the_header() -> None:
    head = b"http/1.1 200 ok\r\ncontent-length: 80"
    assert version_of(head, BINARY) == "m[Negative,Positive]"
    assert version_of(head, THREE) == "m[Negative,Neutral,Positive]"
    assert version_of(head, b'{"error": {}}') is None
    assert served_by(head) is None


def test_summary_counts_ok_and_failed_apart() -> None:
    ledger = Ledger()
    ledger.record(1.0, None, "A", "r1")
    ledger.record(1.1, None, "A", "r2")
    ledger.record(1.2, "http_502")
    ledger.record(1.3, "conn:ConnectionResetError")
    ledger.record(1.4, "connect:ConnectionRefusedError")
    ledger.record(1.5, "timeout")
    ledger.record(2.5, None, "B", "r1")  # outside the window below
    got = ledger.summary(1.0, 2.0)
    assert (got["requests"], got["ok"], got["failed"]) == (6, 2, 4)
    assert got["failed_by_kind"] == {
        "connection": {"conn:ConnectionResetError": 1, "connect:ConnectionRefusedError": 1},
        "http": {"http_502": 1},
        "timeout": {"timeout": 1},
    }
    assert got["versions"] == {"A": 2} and got["servers"] == {"r1": 1, "r2": 1}


def test_series_shows_a_switch() -> None:
    entries = [(0.1, "A"), (0.6, "A"), (0.9, None), (1.2, "A"), (1.7, "B"), (2.4, "B")]
    ledger = Ledger()
    for t, version in entries:
        if version is None:
            ledger.record(10 + t, "http_503")
        else:
            ledger.record(10 + t, None, version, "r1")
    rows = ledger.series(10.0, 13.0, 1.0)
    assert [r["t"] for r in rows] == [0.0, 1.0, 2.0]
    assert [r["versions"] for r in rows] == [{"A": 2}, {"A": 1, "B": 1}, {"B": 1}]
    assert [r["failed"] for r in rows] == [1, 0, 0]
    assert ledger.first(10.0, version="B") == 11.7
    assert ledger.last(13.0, version="A") == 11.2
    assert ledger.first(10.0, server="r1", other_than="A") == 11.7
    assert ledger.dominant_version(10.0, 12.0) == "A"
    assert ledger.dominant_version(11.5, 13.0, server="r1") == "B"
    assert ledger.dominant_version(11.5, 13.0, server="r9") is None


def test_an_entry_at_the_end_of_the_range_lands_in_the_last_step() -> None:
    from benchmarks.ledger import Entry

    rows = series([Entry(3.0, None, "A")], 0.0, 3.0, 1.0)
    assert len(rows) == 3 and rows[-1]["ok"] == 1
    assert len(series([], 0.0, 3.0002, 1.0)) == 3  # no empty step for a sliver
    assert len(series([], 0.0, 3.1, 1.0)) == 4


def test_time_never_runs_backwards() -> None:
    """Entries stay in time order (bisect relies on it) even if a stamp is a hair older."""
    ledger = Ledger()
    ledger.record(5.0, None, "A")
    ledger.record(4.9, None, "B")
    assert [e.version for e in ledger.window(5.0, 6.0)] == ["A", "B"]


def test_empty_windows_count_nothing() -> None:
    assert summarize([])["requests"] == 0
    assert Ledger().first(0.0) is None and Ledger().last(1e9) is None

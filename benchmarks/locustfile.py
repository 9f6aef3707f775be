"""Locust load test for the sentiment API: `POST /predict` with real tweets, no think time by default.

Uses FastHttpUser (geventhttpclient): several times cheaper per request than HttpUser, so the
load generator does not starve a 2-core server it shares the machine with.

Run via `make load` (benchmarks/load.py starts the service), or directly against a server:
    locust -f benchmarks/locustfile.py --headless -u 500 -r 100 -t 60s --host http://127.0.0.1:8000 \\
        --tweets-data ../shared/data/twitter_entity
"""

from __future__ import annotations

import json
import random
import urllib.request
from pathlib import Path
from typing import Any

from locust import FastHttpUser, events, task

from benchmarks.texts import Tweet, load_tweets

TWEETS: list[Tweet] = []
STATE: dict[str, Any] = {}


@events.init_command_line_parser.add_listener  # type: ignore[untyped-decorator]
def add_arguments(parser: Any) -> None:
    parser.add_argument("--tweets-data", default="", help="data folder (built-in sample if absent)")
    parser.add_argument("--tweets-limit", type=int, default=2000, help="how many tweets to sample")
    parser.add_argument("--wait-min", type=float, default=0.0, help="think time minimum (s)")
    parser.add_argument("--wait-max", type=float, default=0.0, help="think time maximum (s)")
    parser.add_argument("--api-key", default="", help="sent as Authorization: Bearer KEY")
    parser.add_argument("--request-timeout", type=float, default=30.0, help="per request (s)")
    parser.add_argument("--summary-json", default="", help="write final totals here on exit")


@events.init.add_listener  # type: ignore[untyped-decorator]
def read_tweets(environment: Any, **_: Any) -> None:
    options = environment.parsed_options
    folder = Path(options.tweets_data) if options and options.tweets_data else None
    tweets, source = load_tweets(folder, limit=options.tweets_limit if options else 2000)
    TWEETS[:] = tweets
    if options:
        TweetUser.network_timeout = options.request_timeout
    STATE["environment"] = environment
    STATE["source"] = source
    print(f"locustfile: {len(tweets)} tweets from {source}")


@events.test_start.add_listener  # type: ignore[untyped-decorator]
def discover_model(environment: Any, **_: Any) -> None:
    """Ask /info once, outside Locust's stats, whether the model reads each tweet's entity."""
    options = environment.parsed_options
    headers = {"Authorization": f"Bearer {options.api_key}"} if options and options.api_key else {}
    request = urllib.request.Request(f"{environment.host}/info", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            STATE["text_pair"] = bool(json.load(response).get("text_pair"))
    except (OSError, ValueError):  # not this service, or no /info: send text only
        STATE["text_pair"] = False


@events.quit.add_listener  # type: ignore[untyped-decorator]
def write_summary(exit_code: int, **_: Any) -> None:
    """Final totals after every user stopped (Locust's CSV is only rewritten once a second)."""
    environment = STATE.get("environment")
    if environment is None or environment.runner is None:
        return
    options = environment.parsed_options
    if not options or not options.summary_json:
        return
    total = environment.runner.stats.total
    summary = {
        "requests": total.num_requests,
        "failures": total.num_failures,
        "rps": round(total.total_rps, 1),
        "p50_ms": total.get_response_time_percentile(0.5),
        "p95_ms": total.get_response_time_percentile(0.95),
        "p99_ms": total.get_response_time_percentile(0.99),
        "max_ms": total.max_response_time,
        "users": options.num_users,
        "run_time": options.run_time,
        "tweets": STATE.get("source"),
        "exit_code": exit_code,
    }
    Path(options.summary_json).write_text(json.dumps(summary, indent=2) + "\n")


class TweetUser(FastHttpUser):
    """One closed-loop client: send a tweet, check the answer, wait (0 s by default), repeat."""

    network_timeout = 30.0
    connection_timeout = 30.0

    def on_start(self) -> None:
        options = self.environment.parsed_options
        self.wait_range = (options.wait_min, max(options.wait_min, options.wait_max))
        self.headers = {"Authorization": f"Bearer {options.api_key}"} if options.api_key else {}
        self.rng = random.Random()

    def wait_time(self) -> float:
        low, high = self.wait_range
        return self.rng.uniform(low, high) if high > 0 else 0.0

    @task
    def predict(self) -> None:
        tweet = self.rng.choice(TWEETS)
        body = (
            {"text": tweet.text, "entity": tweet.entity}
            if STATE.get("text_pair")
            else {"text": tweet.text}
        )
        with self.client.post(
            "/predict", json=body, headers=self.headers, catch_response=True
        ) as response:
            if response.status_code != 200:
                response.failure(f"HTTP {response.status_code}: {(response.text or '')[:200]}")
            elif '"label"' not in (response.text or ""):
                response.failure("200 without a label in the body")
            else:
                response.success()

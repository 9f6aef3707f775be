"""--engine ray on a real two-node Ray cluster on this machine (`ray.cluster_utils.Cluster`:
a head and a second node, each its own raylet and object store): both nodes score, the
output is complete and in input order. About a minute on the 2-core CI machine."""

from __future__ import annotations

import csv
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

# Ray on this machine alone stays on 127.0.0.1 (as the scorer keeps it: service/score_ray.py);
# read when Ray is first imported.
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")

REPO = Path(__file__).resolve().parents[2]
ROWS = 3000
TEXTS = ["I love this game", "awful update, servers broken", "the movie is the best", "sad today"]


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_two_nodes_both_score_and_the_output_is_whole_and_in_order(
    tmp_path: Path, slow_bundle: Path
) -> None:
    """Head: 2 CPUs (one held for the read, one actor); second node: 1 CPU (one actor). The
    driver joins by address, as on a real cluster: the service package and the bundle reach
    the actors through Ray, not the file system. `slow_bundle` costs ~1 ms a row, so both
    actors are busy before the input runs out."""
    from ray.cluster_utils import Cluster

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    started = time.perf_counter()
    local = {"node_ip_address": "127.0.0.1"}
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 2, "include_dashboard": False, **local})  # fmt: skip
    try:
        cluster.add_node(num_cpus=1, **local)
        cluster.wait_for_nodes()
        source = tmp_path / "in.csv"
        with open(source, "w", newline="", encoding="utf-8") as handle:
            rows = [[i, f"{TEXTS[i % 4]} {i}"] for i in range(ROWS)]
            csv.writer(handle).writerows([["id", "text"], *rows])
        command = [sys.executable, "-m", "service.score", str(source), "-o", str(tmp_path / "out.csv"),
                   "--model", str(slow_bundle), "--engine", "ray", "--ray-address", cluster.address]  # fmt: skip
        done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=400)
    finally:
        cluster.shutdown()
    assert done.returncode == 0, done.stderr
    with open(tmp_path / "out.csv", newline="", encoding="utf-8") as handle:
        assert [row["id"] for row in csv.DictReader(handle)] == [str(i) for i in range(ROWS)]
    summary = done.stderr.strip().splitlines()[-1]
    per_node = dict(re.findall(r"([0-9a-f]{8}) (\d+)", summary.split("rows per node: ")[1]))
    assert len(per_node) == 2 and all(int(n) > 0 for n in per_node.values()), summary
    assert sum(map(int, per_node.values())) == ROWS
    print(f"two-node run: {summary} (test {time.perf_counter() - started:.1f} s)")

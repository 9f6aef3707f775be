"""Peer servers benchmarked against ours on the same texts, load and machine."""

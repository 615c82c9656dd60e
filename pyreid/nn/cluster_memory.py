"""Moved to :mod:`pyreid.losses.cluster_memory`; this name stays importable."""

from pyreid.losses.cluster_memory import ClusterMemory

__all__ = ["ClusterMemory"]

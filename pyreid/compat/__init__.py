"""Drop-in replacements for functions widely copied between re-ID code bases.

Each keeps the exact name, arguments, defaults and return type of the code it
replaces, so switching is a one-line import change.
"""

from pyreid.compat.cluster_memory import ClusterMemory
from pyreid.compat.jaccard import compute_jaccard_distance
from pyreid.compat.re_ranking import re_ranking

__all__: list = ["ClusterMemory", "compute_jaccard_distance", "re_ranking"]

"""Training algorithms, one module each; ``ALGORITHMS`` maps the command-line names to them.

>>> from pyreid.algorithms import ALGORITHMS
>>> sorted(ALGORITHMS)
['supervised', 'triplet']
"""

from pyreid.algorithms.base import Algorithm, StepInfo
from pyreid.algorithms.supervised import Supervised, SupervisedOptions
from pyreid.algorithms.triplet import Triplet, TripletOptions

ALGORITHMS = {cls.name: cls for cls in (Supervised, Triplet)}

__all__ = ["ALGORITHMS", "Algorithm", "StepInfo", "Supervised", "SupervisedOptions", "Triplet", "TripletOptions"]

"""Training algorithms, one module each; ``ALGORITHMS`` maps the command-line names to them.

>>> from pyreid.algorithms import ALGORITHMS
>>> sorted(ALGORITHMS)
['cluster-contrast', 'ise', 'supervised', 'triplet']
"""

from pyreid.algorithms.base import Algorithm, StepInfo
from pyreid.algorithms.cluster_contrast import ClusterContrast, ClusterContrastOptions, NoClustersError
from pyreid.algorithms.ise import ISE, ISEOptions
from pyreid.algorithms.supervised import Supervised, SupervisedOptions
from pyreid.algorithms.triplet import Triplet, TripletOptions

ALGORITHMS = {cls.name: cls for cls in (Supervised, Triplet, ClusterContrast, ISE)}

__all__ = ["ALGORITHMS", "Algorithm", "ClusterContrast", "ClusterContrastOptions", "ISE", "ISEOptions",
           "NoClustersError", "StepInfo", "Supervised", "SupervisedOptions", "Triplet", "TripletOptions"]

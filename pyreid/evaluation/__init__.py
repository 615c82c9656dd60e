"""Evaluation: CMC/mAP/mINP (Market-1501 protocol), feature extraction, pictures.

Plotting lives in :mod:`pyreid.evaluation.visualize` and imports matplotlib
and scikit-learn only when called.
"""

from pyreid.evaluation.evaluator import Evaluator, extract_features
from pyreid.evaluation.rank import evaluate, evaluate_rank

__all__ = ["evaluate", "evaluate_rank", "extract_features", "Evaluator"]

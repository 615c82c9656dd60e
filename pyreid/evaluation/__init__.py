"""Evaluation: CMC/mAP/mINP (Market-1501 protocol), feature extraction, pictures.

Plotting lives in :mod:`pyreid.evaluation.visualize` and imports matplotlib
and scikit-learn only when called.
"""

from pyreid.evaluation.rank import evaluate, evaluate_rank
from pyreid.evaluation.evaluator import Evaluator, evaluate_split, extract_features

__all__ = ["evaluate", "evaluate_rank", "extract_features", "Evaluator", "evaluate_split"]

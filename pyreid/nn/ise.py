"""Moved to :mod:`pyreid.losses.ise`; this name stays importable."""

from pyreid.losses.ise import ise_lambda, label_preserving_loss, support_samples

__all__ = ["ise_lambda", "label_preserving_loss", "support_samples"]

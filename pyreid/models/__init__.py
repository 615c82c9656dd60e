"""Re-ID networks on torchvision backbones (torchvision is imported when a model is built)."""

from pyreid.models.backbone import ARCHS, PretrainedWeightsUnavailable
from pyreid.models.model import LoadReport, ReIDModel, ReIDOutput, build_model, load_weights
from pyreid.models.pooling import GeneralizedMeanPooling

__all__ = ["ARCHS", "build_model", "load_weights", "LoadReport", "ReIDModel", "ReIDOutput",
           "GeneralizedMeanPooling", "PretrainedWeightsUnavailable"]

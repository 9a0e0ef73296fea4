"""Typed errors shared by the pipeline, the tools and the node.

Each cause of bad input has its own type so the node can count and throttle
them per cause in diagnostics instead of logging one generic failure.
"""


class BevQuantError(Exception):
    """Base class of every error this package raises on purpose."""


class ConfigError(BevQuantError):
    """A configuration file or parameter value is missing or out of range."""


class InvalidMessageError(BevQuantError):
    """A sensor message cannot be converted (bad encoding, size, fields).

    ``cause`` is a short stable slug (``missing_z_field``, ``truncated`` ...): the node
    counts and throttles its error log per topic and cause, so one cause never hides another.
    """

    def __init__(self, message: str, cause: str = "invalid") -> None:
        super().__init__(message)
        self.cause = cause


class ModelContractError(BevQuantError):
    """A model file does not match the engine I/O contract (docs/architecture.md §2)."""


class EngineInputError(BevQuantError):
    """A frame handed to an inference engine lacks a tensor or has the wrong shape/dtype."""


class EvaluationInputError(BevQuantError):
    """Predictions and ground truth cannot be evaluated together (frames, scores, sizes)."""


class EngineBuildError(BevQuantError):
    """TensorRT is missing or could not parse/build/deserialize an engine."""


class BagError(BevQuantError):
    """A rosbag2 cannot be replayed: missing or corrupt, unknown topic, or unusable type."""


class CalibrationError(BevQuantError):
    """Calibration cannot run: no frames, or a tensor with no observed values."""


class PrecisionPlanError(BevQuantError):
    """A precision plan file is unreadable or names nodes the model does not have."""

"""SaShiMi: S4-based raw-audio generation ("It's Raw! Audio Generation with State-Space Models")."""
from .ar import SashimiAR
from .backbone import Sashimi
from .checkpoint import CheckpointError, load_model, save_model
from .config import ARConfig, DiffWaveConfig
from .diffusion import NoiseSchedule
from .diffwave import SashimiDiffWave
from .eval import am_score, frechet_distance, inception_score, load_classifier, modified_inception_score
from .mulaw import SILENCE_TOKEN, mulaw_decode, mulaw_encode
from .ops.cauchy import cauchy
from .s4 import S4
from .sampling import sample_logits

__version__ = "0.1.0"

__all__ = [
    "ARConfig", "CheckpointError", "DiffWaveConfig", "NoiseSchedule", "S4", "SILENCE_TOKEN", "Sashimi", "SashimiAR",
    "SashimiDiffWave", "cauchy", "load_model", "mulaw_decode", "mulaw_encode", "sample_logits", "save_model",
    # sample quality (sashimi.eval)
    "am_score", "frechet_distance", "inception_score", "load_classifier", "modified_inception_score",
]

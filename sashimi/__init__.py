"""SaShiMi: S4-based raw-audio generation ("It's Raw! Audio Generation with State-Space Models")."""
import os as _os
import sys as _sys

# OpenMP threads that wait at a barrier sleep instead of spinning, unless the variable is set:
# measured on 2 cores, a training step takes the same time on an idle machine (2.84-2.91 s vs
# 2.83-2.89 s) and a third of it on a busy one (5.6 s vs 17.7 s), where spinning threads steal the
# cores the others need. It can only act before PyTorch loads OpenMP, i.e. when sashimi is
# imported first, as its command line does.
if "torch" not in _sys.modules:
    _os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
from .ar import SashimiAR
from .backbone import Sashimi
from .checkpoint import CheckpointError, load_model, save_model
from .config import ARConfig, DiffWaveConfig
from .diffusion import NoiseSchedule
from .diffwave import SashimiDiffWave
from .errors import SashimiError
from .eval import am_score, frechet_distance, inception_score, load_classifier, modified_inception_score
from .mulaw import SILENCE_TOKEN, mulaw_decode, mulaw_encode, silence_token
from .ops.cauchy import cauchy
from .s4 import S4
from .sampling import sample_logits

__version__ = "0.1.0"

__all__ = [
    "ARConfig", "CheckpointError", "DiffWaveConfig", "NoiseSchedule", "S4", "SILENCE_TOKEN", "Sashimi", "SashimiAR",
    "SashimiDiffWave", "SashimiError", "cauchy", "load_model", "mulaw_decode", "mulaw_encode", "sample_logits",
    "save_model", "silence_token",
    # sample quality (sashimi.eval)
    "am_score", "frechet_distance", "inception_score", "load_classifier", "modified_inception_score",
]

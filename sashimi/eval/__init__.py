"""Sample quality: the SaShiMi paper's classifier-based metrics and the classifiers' log-mel front end.

    from sashimi.eval import inception_score, frechet_distance, log_mel
    inception_score(probs)                          # probs (N, C): a classifier's softmax outputs
    frechet_distance(features, reference_features)  # (N, D), (M, D) penultimate-layer features
"""
from .frontend import log_mel
from .metrics import GaussianStats, am_score, frechet_distance, gaussian_stats, inception_score, modified_inception_score

__all__ = ["GaussianStats", "am_score", "frechet_distance", "gaussian_stats", "inception_score", "log_mel",
           "modified_inception_score"]

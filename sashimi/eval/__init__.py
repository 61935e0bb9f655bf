"""Sample quality: the SaShiMi paper's classifier-based metrics, a log-mel front end and digit
classifiers (one trained on FSDD bundled; the SaShiMi paper's SC09 ResNeXt file, ``"sc09_resnext"``,
downloaded once and read as published) and the paper's evaluation protocol (:mod:`sashimi.eval.paper`).

    from sashimi.eval import load_classifier, inception_score, frechet_distance
    clf = load_classifier("fsdd")
    probs, feats = clf.predict(wavs, 8000)               # (N, 10), (N, D)
    ref_probs, ref_feats = clf.predict(real_wavs, 8000)
    inception_score(probs), frechet_distance(feats, ref_feats)

``sashimi eval`` scores folders of WAV files (or a model's samples) from the command line.
"""
from .classifier import Classifier, bundled_classifiers, load_classifier, save_classifier
from .conditional import label_accuracy, match_classes
from .frontend import log_mel
from .likelihood import utterance_nll_bits
from .metrics import (GaussianStats, am_score, frechet_distance, gaussian_stats, inception_score,
                      modified_inception_score)
from .models import DigitCNN, ResNeXt
from .paper import paper_file_list, threshold_protocol
from .rerank import best_of

__all__ = ["Classifier", "DigitCNN", "GaussianStats", "ResNeXt", "am_score", "best_of", "bundled_classifiers",
           "frechet_distance", "gaussian_stats", "inception_score", "label_accuracy", "load_classifier", "log_mel",
           "match_classes",
           "modified_inception_score", "paper_file_list", "save_classifier", "threshold_protocol",
           "utterance_nll_bits"]

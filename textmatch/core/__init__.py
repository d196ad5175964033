"""The core: the matching maths (eqs. 1-2), episodes, encoders and `MatchingNetwork`.

Classification and retrieval both stand on it; it imports neither, nor the model card.
"""

from .card_data import ModelCardData
from .diagnostics import SupportDiagnostics, diagnose_support
from .encoders import BiLSTMEncoder, Encoder, TransformerEncoder
from .episodes import Episode, EpisodeSampler
from .modeling import MatchingNetwork, MatchingNetworkConfig, is_textmatch_folder
from .optimization import TrainOutput

__all__ = [
    "BiLSTMEncoder",
    "Encoder",
    "Episode",
    "EpisodeSampler",
    "MatchingNetwork",
    "MatchingNetworkConfig",
    "ModelCardData",
    "SupportDiagnostics",
    "TrainOutput",
    "TransformerEncoder",
    "diagnose_support",
    "is_textmatch_folder",
]

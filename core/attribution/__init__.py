"""TRAK data attribution, one facade over small injected stages (as MadryLab/trak):

- a `Featurizer` (core/attribution/gradients.py): projected per-example gradients of the
  correct-class margin, g(z) = Pᵀ ∇θ f(z), by one of FEATURIZERS (factored, sparse, dense),
  each with its projector (core/attribution/projectors.py);
- the feature store (store.py): train features on disk as a memmap beside a metadata.json that
  refuses a mismatched config, with ΦᵀΦ accumulated while they stream;
- the scorer (scorer.py): one Cholesky factor of ΦᵀΦ + λI, targets solved and scored in chunks;
- `model_scores` (trak.py): the three for one model; `lds` (lds.py) measures how well scores
  predict retrained margins.
"""
from core.attribution.gradients import FEATURIZERS, Featurizer, make_featurizer, margin, scoped_layers
from core.attribution.lds import lds, subset_masks
from core.attribution.trak import model_scores, proxy_model_config

__all__ = ["FEATURIZERS", "Featurizer", "lds", "make_featurizer", "margin", "model_scores", "proxy_model_config",
           "scoped_layers", "subset_masks"]

"""TRAK data attribution, one facade over small injected stages (as MadryLab/trak):

- a `Featurizer` (core/attribution/gradients.py): projected per-example gradients of the
  correct-class margin, g(z) = Pᵀ ∇θ f(z), by one of FEATURIZERS (factored, sparse, dense),
  each with its projector (core/attribution/projectors.py);
- the feature store (store.py): train features on disk as a memmap beside a metadata.json that
  refuses a mismatched config, with ΦᵀΦ accumulated while they stream;
- the scorer (scorer.py): one Cholesky factor of ΦᵀΦ + λI, targets solved and scored in chunks;
- `model_factors` / `model_scores` (trak.py): the three for one model, as factors or dense;
- the factor store (factors.py) and `FactoredScores` (factored.py): an ensemble's scores kept
  as per-member factors, every selection computed from them (`Scores`, scores.py); `open_scores`
  opens an analysis's; `lds` (lds.py) measures how well scores predict retrained margins.
"""
from core.attribution.gradients import FEATURIZERS, Featurizer, make_featurizer, margin, scoped_layers
from core.attribution.lds import lds, subset_masks
from core.attribution.factors import open_scores
from core.attribution.scores import DenseScores, DenseTooLarge, Scores
from core.attribution.trak import model_factors, model_scores, proxy_model_config

__all__ = ["FEATURIZERS", "DenseScores", "DenseTooLarge", "Featurizer", "Scores", "lds", "make_featurizer", "margin",
           "model_factors", "model_scores", "open_scores", "proxy_model_config", "scoped_layers", "subset_masks"]

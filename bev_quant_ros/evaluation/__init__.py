"""Detection metrics and offline evaluation of the BEV pipeline."""

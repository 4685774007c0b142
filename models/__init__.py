"""Stock-out models: features (one definition for edge and cloud), baselines, training, export, evaluation."""

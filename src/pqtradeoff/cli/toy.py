"""`pqtradeoff toy`: the paper's toy experiment (registered on the app; implemented in pqtradeoff.toy)."""

"""Training the judge: synthetic data, warm starts and RL."""

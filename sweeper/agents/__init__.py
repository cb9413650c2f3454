"""Value-based agents: tabular TD control and DQN variants."""

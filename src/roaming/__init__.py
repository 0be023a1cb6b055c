"""Maximum Roaming multi-task learning and its baselines."""

__version__ = "0.1.0"

"""speechrl: reinforcement learning and preference optimization for speech language models."""

__version__ = "0.1.0"

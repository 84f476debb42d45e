"""outdial: an outbound-calling service for AI voice agents."""

__version__ = "0.1.0"

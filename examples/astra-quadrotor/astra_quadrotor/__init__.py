"""Quadrotor body rates and thrust for Astra world."""

__version__ = "0.1.0"

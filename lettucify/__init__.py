"""Lettucify: train, evaluate, track and deploy a fridge-food image classifier."""

__version__ = "0.1.0"

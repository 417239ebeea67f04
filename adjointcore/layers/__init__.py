"""Layers with hand-written forward and vector-Jacobian products (see docs/protocols.md)."""
from .base import Layer, ParameterFree

__all__ = ["Layer", "ParameterFree"]

"""Architectures built from adjointcore layers and solvers.

- :class:`ODEBlock`: a layer whose forward is a solve and whose VJP is a chosen gradient method.
- NODE-EW (He, Xie, Lin): :class:`CoupledField`, the corrected Algorithm 1
  (:func:`node_ew_gradient`).
- ANODEV2: :class:`ANODEV2Block`, a layer with ``params = [w0, p]`` whose cache
  (:class:`ANODEV2Cache`) also holds the final weights, with :class:`RDAEvolution`
  (reaction-diffusion-advection weights stepped in Fourier space, :func:`rda_step`) or
  :class:`LayerEvolution` (a general ``q``).
- LM-ResNet (Lu, Zhong, Li, Dong): :class:`LMStack`, :class:`ResNetStack` with stochastic depth,
  :class:`ShakeShake`.
"""
from ._rda import rda_step, rda_step_vjp, wavenumbers
from .anodev2 import ANODEV2Block, ANODEV2Cache, LayerEvolution, RDAEvolution
from .cnf import CNF, cnf_nll
from .coupled_cnf import CoupledCNF
from .lm_resnet import LMStack, ResNetStack, ShakeShake, linear_survival
from .node_ew import CoupledField, node_ew_gradient
from .odeblock import ODEBlock, ODEBlockCache

__all__ = ["ODEBlock", "ODEBlockCache", "CoupledField", "node_ew_gradient", "ANODEV2Block",
           "ANODEV2Cache", "RDAEvolution", "LayerEvolution", "rda_step", "rda_step_vjp",
           "wavenumbers", "LMStack", "ResNetStack", "ShakeShake", "linear_survival", "CNF",
           "CoupledCNF", "cnf_nll"]

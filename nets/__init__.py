"""Architectures built from adjointcore layers and solvers: ODE blocks, ResNets, LM-ResNet, ANODEV2, NODE-EW."""

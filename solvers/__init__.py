"""Time stepping: Butcher tableaux, Runge-Kutta and linear multistep steps, their discrete
adjoints, step-size control, dense output and the ``solve`` driver.

Imports no other package of this repository.
"""

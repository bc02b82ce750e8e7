"""Research uploads: lab cycling data from .mat files, its SoH and RUL labels, and early-life
prediction of cycle life."""

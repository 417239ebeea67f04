"""Scripted experiments, data loading, HDF5 results and the command line
(`python -m experiments`)."""

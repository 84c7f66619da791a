"""Calibration algorithms on numpy/Dask arrays (layer 2): overscan and trim,
stack combination, masters, science calibration, gain and read noise."""

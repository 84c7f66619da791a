"""Calibration algorithms on numpy/Dask arrays (layer 2): overscan and trim,
per-amplifier overscan/gain and assembly (``amplifiers``), 1-D robust fits
(``fitting``), stack combination, masters, science calibration, spectroscopic
flat normalisation and arcs (``response``), gain and read noise."""

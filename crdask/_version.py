"""Single source of the crdask version string (recorded in every output's HISTORY)."""
__version__ = "0.1.0"

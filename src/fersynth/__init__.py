"""fersynth: facial expression recognition with calibrated synthetic faces."""

__version__ = "0.1.0"

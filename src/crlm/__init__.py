"""crlm: prognostic models for colorectal liver metastases."""
__version__ = "0.1.0"

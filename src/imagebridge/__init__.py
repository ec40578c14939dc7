"""imagebridge: a Carequality imaging data exchange gateway (XCPD, XCA, XCA-I)."""

__version__ = "0.1.0"

"""DICOM: header reads, KOS manifest build and parse, synthetic studies.

pydicom Datasets live only in this package; everything it hands out is a
frozen model from :mod:`imagebridge.model.imaging` (or bytes).
"""

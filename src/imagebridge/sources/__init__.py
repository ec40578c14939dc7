"""Image sources: where a community's studies live (folder archive, DICOMweb PACS, DIMSE PACS)."""

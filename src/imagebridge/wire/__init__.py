"""Pure codecs between bytes/XML and the frozen models: no I/O, clock or randomness."""

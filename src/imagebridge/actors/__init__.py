"""Actors: the Responding Gateway (``responding``) and the Initiating Gateway (``initiating``).

Actors work on domain models only; codecs in :mod:`imagebridge.wire` turn
messages into those models and back.
"""

"""Frozen domain models shared by every layer."""

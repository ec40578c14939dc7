"""Initiating side: the client, fan-out to partner communities, the pull workflow and the IIG."""

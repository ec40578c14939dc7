"""SOAP over HTTP: the ASGI server that dispatches by WS-Addressing Action, and the client."""

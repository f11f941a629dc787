"""The 1.10.0 wire: ZeroMQ PULL for requests, XPUB for answers (`frontend`), and who may do
what on it (`access`: CurveZMQ, TERMINATION). Sees the server only through `Gateway`."""

"""Simulated Envoys on grpc.aio, in worker processes (see ``fleet.Fleet``)."""

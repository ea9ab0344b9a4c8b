"""gRPC services: ADS (SotW and delta), per-type xDS services, CSDS."""

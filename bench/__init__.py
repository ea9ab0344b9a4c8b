"""Benchmarks of xds-server: a simulated Envoy fleet and the scenarios that drive it.

``python -m bench [scenario…] [--proxies N[,N…]] [--quick]`` (``make bench``); see
docs/performance.md.
"""

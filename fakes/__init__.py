"""Local servers that speak the real Salesforce, HubSpot, Leaditio, LeadOS and LeadNod protocols.

A product of their own: the tests and the benchmarks in bench/ both drive the connector against them,
so they live beside `connector/` rather than inside `tests/`. They need the `test` extra (trustme).
Every fake is served the one way `fakes.server` offers, and HTTPS uses the one CA of `fakes.tls`.
"""

"""Registry adapter: references, Docker credentials, the OCI distribution HTTP client."""

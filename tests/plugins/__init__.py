"""pytest plugins: fixtures that start local services, one module per service."""

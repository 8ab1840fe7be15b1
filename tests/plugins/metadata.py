"""Fixtures for a fake GCE/EC2 instance metadata server on 127.0.0.1."""

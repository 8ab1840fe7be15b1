"""Fixtures for RabbitMQ on 127.0.0.1:5672."""

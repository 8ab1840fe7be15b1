"""Fixtures for the Google Cloud emulators: the Pub/Sub emulator and fake-gcs-server."""

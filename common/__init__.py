"""What the API and the worker share: configuration, database models, errors, queue settings."""

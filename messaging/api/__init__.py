"""The REST API of messaging (`/api/v1/`): views, shapes and URLs."""

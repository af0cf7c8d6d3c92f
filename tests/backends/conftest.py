from tests.backends.live_server import live_server, local_backend  # noqa: F401  (session fixtures)

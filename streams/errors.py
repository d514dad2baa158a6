"""One root exception. The CLI prints any of these as one line and exits non-zero."""


class CoalmineError(Exception):
    """Something the user can act on; the message says what and how."""


class MissingToolError(CoalmineError):
    """A program Coalmine needs (Java, Maven) is not installed."""


class LocalKafkaError(CoalmineError):
    """The local development broker could not be fetched, started or stopped."""


class ClickHouseUnavailableError(CoalmineError):
    """ClickHouse cannot be reached or opened (for chDB: another process holds the data)."""

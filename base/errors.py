"""The one exception family every keycam layer raises for conditions a user can act on."""


class KeycamError(Exception):
    """Base class: the CLI prints the message as one line and exits non-zero."""


class ConfigError(KeycamError):
    """A configuration file or argument is invalid."""


class ModelError(KeycamError):
    """A model file is missing, malformed or unsupported."""

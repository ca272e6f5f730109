"""The one root error of plantstream and its families."""


class PlantStreamError(Exception):
    """Root of every error plantstream raises on purpose."""


class ConfigError(PlantStreamError):
    """Invalid configuration; the message names the field and the fix."""


class ConnectorError(PlantStreamError):
    """A system plantstream talks to refused, failed or could not be reached."""

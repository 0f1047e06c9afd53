"""lsq-sync: sync changed rows of an application database to LeadSquared leads."""

from connector.config import Config, load_config
from connector.errors import LsqSyncError
from connector.sync import Connector, RunReport

__all__ = ["Config", "Connector", "LsqSyncError", "RunReport", "load_config"]

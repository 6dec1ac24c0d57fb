"""Lead marketplace -> CRM connector."""

__version__ = "0.1.0"

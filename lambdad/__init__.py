"""lambdad: AWS Lambda, self-hosted."""

__version__ = "0.1.0"

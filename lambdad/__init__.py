"""lambdad."""

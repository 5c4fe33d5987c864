"""The bus contract: tokens, subjects, headers and event models."""

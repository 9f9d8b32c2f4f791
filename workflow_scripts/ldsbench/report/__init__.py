"""Markdown tables and figures of the results."""

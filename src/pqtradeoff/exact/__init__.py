"""Exact finite-state models: closed forms and the demo's models."""

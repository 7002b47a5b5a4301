"""Webhook receiver fixture."""

"""Webhook ingestion: authentication, the durable inbox, vendor normalisers."""

"""front, catalog and pricing: HTTP services propagating W3C trace context and baggage."""

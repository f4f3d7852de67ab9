"""SQL generators (the only sqlglot importers): pure functions returning SQL text."""

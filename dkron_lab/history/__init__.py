"""The execution history: the DuckDB adapter (:mod:`~dkron_lab.history.duckdb` is its facade)
and copying history between servers (:mod:`~dkron_lab.history.copy`). Importing the package
imports nothing; only its modules that must speak DuckDB import it."""

"""Core statements compiled once and run on the DBAPI connection: the token endpoint's writes and reads.

A token response writes two to four rows whose values are all at hand (idp/oidc/tokens.py). Through
``Connection.execute`` each INSERT costs about 0.1 ms of CPU in SQLAlchemy's execution context (compiled
cache look-up, parameter processing, result set-up) around some 0.03 ms in the driver: the largest single
cost of a client_credentials request (bench/README.md). Here a statement is compiled once per dialect and
shape with SQLAlchemy's own compiler and its columns' own bind processors (so the values stored are the same
as through the ORM: UTC datetimes, JSON text), then run with one ``cursor.execute``. Reads (is this token
still good?) come back as a dict by column name, through the columns' result processors.

What SQLAlchemy would otherwise do and this keeps: the engine's before/after_cursor_execute events; driver
errors become SQLAlchemy's exceptions (the app answers OperationalError with a 503 and DataError with a
400); a connection that died is invalidated so the pool replaces it; a statement whose columns have
Python-side defaults refuses to run without them (nothing would compute them here). Statements run in
whatever transaction the connection is in; callers own commit and rollback as before.
"""

from __future__ import annotations

from sqlalchemy import exc
from sqlalchemy.engine import Connection


class DirectStatement:
    def __init__(self, statement):
        self.statement = statement
        self._compiled: dict = {}

    def _compile(self, dialect, keys: tuple[str, ...]):
        compiled = self.statement.compile(dialect=dialect, column_keys=list(keys))
        # A bind the caller does not fill is a column default SQLAlchemy would compute at execution (or a
        # bindparam the statement forgot to name): refuse, rather than store NULL.
        missing = [name for name, bind in compiled.binds.items()
                   if name not in keys and bind.value is None and bind.callable is None]
        if missing:
            raise ValueError(f"give values for {missing}: defaults are not computed for direct statements")
        fixed = {name: bind.value for name, bind in compiled.binds.items() if name not in keys}
        processors = {}
        for name, bind in compiled.binds.items():
            processor = bind.type.dialect_impl(dialect).bind_processor(dialect)
            if processor is not None:
                processors[name] = processor
        names = tuple(compiled.positiontup) if compiled.positional else None
        # A SELECT's columns by name, each with its type's result processor (text back to UTC datetimes, JSON).
        returned = getattr(self.statement, "selected_columns", None) or getattr(self.statement, "exported_columns", {})
        columns = tuple((key, column.type.dialect_impl(dialect).result_processor(dialect, None))
                        for key, column in returned.items())
        entry = (compiled.string, names, fixed, processors, columns)
        self._compiled[(dialect.name, keys)] = entry
        return entry

    def execute(self, connection: Connection, params: dict) -> int:
        """Run on ``connection``'s DBAPI connection, in its transaction; returns the row count."""
        return self._run(connection, params, fetch=None)

    def first(self, connection: Connection, params: dict) -> dict | None:
        """Run a SELECT; its first row by column name, as SQLAlchemy would return it, or None."""
        return self._run(connection, params, fetch="first")

    def all(self, connection: Connection, params: dict) -> list[dict]:
        """Run a SELECT; its rows by column name, as SQLAlchemy would return them."""
        return self._run(connection, params, fetch="all")

    def _run(self, connection: Connection, params: dict, fetch: str | None):
        dialect = connection.dialect
        keys = tuple(params)
        sql, names, fixed, processors, columns = (self._compiled.get((dialect.name, keys))
                                                  or self._compile(dialect, keys))
        values = {**fixed, **params}
        for name, processor in processors.items():
            if name in values:
                values[name] = processor(values[name])
        arguments = tuple(values[name] for name in names) if names is not None else values
        dbapi_connection = connection.connection.dbapi_connection
        cursor = dbapi_connection.cursor()
        dispatch = connection.dispatch
        try:
            if dispatch.before_cursor_execute:
                # Instrumentation (statement logging, tracing, the tests' statement counts) still sees it.
                dispatch.before_cursor_execute(connection, cursor, sql, arguments, None, False)
            cursor.execute(sql, arguments)
            if dispatch.after_cursor_execute:
                dispatch.after_cursor_execute(connection, cursor, sql, arguments, None, False)
            if fetch is None:
                return cursor.rowcount
            if fetch == "all":
                return [_by_name(columns, row) for row in cursor.fetchall()]
            row = cursor.fetchone()
            return _by_name(columns, row) if row is not None else None
        except dialect.loaded_dbapi.Error as error:
            gone = dialect.is_disconnect(error, dbapi_connection, cursor)
            if gone:
                connection.invalidate(error)
            raise exc.DBAPIError.instance(sql, arguments, error, dialect.loaded_dbapi.Error,
                                          connection_invalidated=gone, dialect=dialect) from error
        finally:
            try:
                cursor.close()
            except dialect.loaded_dbapi.Error:
                pass


def _by_name(columns, row) -> dict:
    # Every value through its processor, NULL too, as SQLAlchemy does.
    return {key: (processor(value) if processor is not None else value)
            for (key, processor), value in zip(columns, row)}

"""List Schemas, List Tables, Get Table Metadata: what a form builder needs, from the catalog.

Plain catalog queries (pg_namespace, pg_class, pg_attribute, pg_constraint, pg_index), bound
parameters only.  Get Table Metadata also describes each column as the JSON value it becomes
(``json``) and offers ``insertSchema``, a JSON Schema of an Insert Row form for the table.
"""

from __future__ import annotations

from typing import Any

from pgactions.db.output import Output
from pgactions.db.session import Session
from pgactions.handlers.base import Call
from pgactions.render.templating import quote_identifier
from pgactions.spec.errors import ActionError

__all__ = ["fetch", "json_schema_of", "run_get_table_metadata", "run_list_schemas", "run_list_tables"]

_SYSTEM = "(n.nspname IN ('pg_catalog', 'information_schema', 'pg_toast') OR n.nspname LIKE 'pg\\_%%')"

_SCHEMAS_SQL = f"""
SELECT n.nspname AS name, pg_get_userbyid(n.nspowner) AS owner, obj_description(n.oid, 'pg_namespace') AS comment,
       {_SYSTEM} AS system, has_schema_privilege(n.oid, 'USAGE') AS usage
FROM pg_namespace n
WHERE %(system)s OR NOT {_SYSTEM}
ORDER BY {_SYSTEM}, n.nspname
"""

_KINDS = {"r": "table", "v": "view", "m": "materialized view", "f": "foreign table", "p": "partitioned table"}

_TABLES_SQL = """
SELECT c.relname AS name, c.relkind AS kind,
       CASE WHEN c.reltuples < 0 THEN NULL ELSE c.reltuples::bigint END AS "estimatedRows",
       pg_total_relation_size(c.oid) AS "sizeBytes", obj_description(c.oid, 'pg_class') AS comment,
       c.relispartition AS "isPartition"
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = coalesce(%(schema)s, current_schema()) AND c.relkind IN ('r', 'v', 'm', 'f', 'p')
  AND (%(partitions)s OR NOT c.relispartition)
ORDER BY c.relname
"""

_TABLE_SQL = """
SELECT c.oid, c.relname AS name, n.nspname AS schema, c.relkind AS kind,
       CASE WHEN c.reltuples < 0 THEN NULL ELSE c.reltuples::bigint END AS "estimatedRows",
       obj_description(c.oid, 'pg_class') AS comment
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.oid = to_regclass(%(name)s) AND c.relkind IN ('r', 'v', 'm', 'f', 'p')
"""

_COLUMNS_SQL = """
SELECT a.attnum AS position, a.attname AS name, format_type(a.atttypid, a.atttypmod) AS type,
       NOT a.attnotnull AS nullable, pg_get_expr(d.adbin, d.adrelid) AS "default",
       CASE a.attidentity WHEN 'a' THEN 'always' WHEN 'd' THEN 'by default' END AS identity,
       CASE a.attgenerated WHEN 's' THEN 'stored' END AS generated,
       col_description(a.attrelid, a.attnum) AS comment,
       base.typname AS base_name, base.typcategory AS base_category, base.typtype AS base_kind,
       elem.typname AS element_name, elem.typcategory AS element_category,
       (SELECT array_agg(e.enumlabel::text ORDER BY e.enumsortorder) FROM pg_enum e
        WHERE e.enumtypid = coalesce(elem.oid, base.oid)) AS labels
FROM pg_attribute a
JOIN pg_type t ON t.oid = a.atttypid
JOIN pg_type base ON base.oid = CASE WHEN t.typtype = 'd' THEN t.typbasetype ELSE t.oid END
LEFT JOIN pg_type elem ON elem.oid = base.typelem AND base.typcategory = 'A'
LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
WHERE a.attrelid = %(oid)s AND a.attnum > 0 AND NOT a.attisdropped
ORDER BY a.attnum
"""

_CONSTRAINTS_SQL = """
SELECT con.conname AS name, con.contype AS kind, pg_get_constraintdef(con.oid) AS definition,
       ARRAY(SELECT a.attname::text FROM unnest(con.conkey) WITH ORDINALITY k(n, i)
             JOIN pg_attribute a ON a.attrelid = con.conrelid AND a.attnum = k.n ORDER BY k.i) AS columns,
       fn.nspname AS ref_schema, fc.relname AS ref_table,
       ARRAY(SELECT a.attname::text FROM unnest(con.confkey) WITH ORDINALITY k(n, i)
             JOIN pg_attribute a ON a.attrelid = con.confrelid AND a.attnum = k.n ORDER BY k.i) AS ref_columns,
       con.confupdtype AS on_update, con.confdeltype AS on_delete,
       cn.nspname AS own_schema, cc.relname AS own_table
FROM pg_constraint con
JOIN pg_class cc ON cc.oid = con.conrelid JOIN pg_namespace cn ON cn.oid = cc.relnamespace
LEFT JOIN pg_class fc ON fc.oid = con.confrelid LEFT JOIN pg_namespace fn ON fn.oid = fc.relnamespace
WHERE con.conrelid = %(oid)s OR (con.contype = 'f' AND con.confrelid = %(oid)s)
ORDER BY con.conname
"""

_INDEXES_SQL = """
SELECT ic.relname AS name, am.amname AS method, i.indisunique AS "unique", i.indisprimary AS "primary",
       pg_get_indexdef(i.indexrelid) AS definition,
       ARRAY(SELECT pg_get_indexdef(i.indexrelid, k, true) FROM generate_series(1, i.indnkeyatts) k) AS columns
FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid JOIN pg_am am ON am.oid = ic.relam
WHERE i.indrelid = %(oid)s
ORDER BY i.indisprimary DESC, ic.relname
"""

_ACTIONS = {"a": "NO ACTION", "r": "RESTRICT", "c": "CASCADE", "n": "SET NULL", "d": "SET DEFAULT"}


def fetch(session: Session, sql: str, params: dict[str, Any]) -> list[dict[str, Any]]:
    return session.query(sql, params)


def run_list_schemas(call: Call) -> Output:
    inputs, session = call.inputs, call.session
    schemas = fetch(session, _SCHEMAS_SQL, {"system": bool(inputs.get("includeSystem"))})
    return Output({"schemas": schemas, "count": len(schemas)})


def run_list_tables(call: Call) -> Output:
    inputs, session = call.inputs, call.session
    tables = fetch(session, _TABLES_SQL, {"schema": inputs.get("schema"),
                                          "partitions": bool(inputs.get("includePartitions"))})
    kinds = inputs.get("kinds")
    for table in tables:
        table["kind"] = _KINDS[table["kind"]]
    if kinds:
        tables = [t for t in tables if t["kind"] in kinds]
    return Output({"tables": tables, "count": len(tables)})


def run_get_table_metadata(call: Call) -> Output:
    inputs, session = call.inputs, call.session
    qualified = quote_identifier(*([inputs["schema"]] if inputs.get("schema") else []), inputs["table"])
    found = fetch(session, _TABLE_SQL, {"name": qualified})
    if not found:
        raise ActionError("UNDEFINED_TABLE", f"table {inputs['table']!r} was not found"
                                             f"{' in schema ' + repr(inputs['schema']) if inputs.get('schema') else ''}",
                          extra={"table": inputs["table"]})
    table = found[0]
    oid = table.pop("oid")
    table["kind"] = _KINDS[table["kind"]]
    columns = [_column(c) for c in fetch(session, _COLUMNS_SQL, {"oid": oid})]
    constraints = fetch(session, _CONSTRAINTS_SQL, {"oid": oid})
    own = [c for c in constraints if (c["own_schema"], c["own_table"]) == (table["schema"], table["name"])]
    table.update(
        columns=columns,
        primaryKey=next(({"name": c["name"], "columns": c["columns"]} for c in own if c["kind"] == "p"), None),
        uniqueConstraints=[{"name": c["name"], "columns": c["columns"]} for c in own if c["kind"] == "u"],
        foreignKeys=[_foreign_key(c) for c in own if c["kind"] == "f"],
        referencedBy=[_referenced_by(c) for c in constraints
                      if c["kind"] == "f" and (c["ref_schema"], c["ref_table"]) == (table["schema"], table["name"])],
        checkConstraints=[{"name": c["name"], "definition": c["definition"]} for c in own if c["kind"] == "c"],
        indexes=fetch(session, _INDEXES_SQL, {"oid": oid}),
        insertSchema=_insert_schema(columns),
    )
    return Output(table)


def _foreign_key(c: dict[str, Any]) -> dict[str, Any]:
    return {"name": c["name"], "columns": c["columns"], "references": {
        "schema": c["ref_schema"], "table": c["ref_table"], "columns": c["ref_columns"]},
        "onUpdate": _ACTIONS.get(c["on_update"]), "onDelete": _ACTIONS.get(c["on_delete"])}


def _referenced_by(c: dict[str, Any]) -> dict[str, Any]:
    return {"name": c["name"], "schema": c["own_schema"], "table": c["own_table"], "columns": c["columns"],
            "referencedColumns": c["ref_columns"], "onDelete": _ACTIONS.get(c["on_delete"])}


def _column(row: dict[str, Any]) -> dict[str, Any]:
    json_schema = json_schema_of(row["base_name"], row["base_category"], row["element_name"],
                                 row["element_category"], row["labels"])
    return {"name": row["name"], "position": row["position"], "type": row["type"], "nullable": row["nullable"],
            "default": row["default"], "identity": row["identity"], "generated": row["generated"],
            "comment": row["comment"], "json": json_schema}


# PostgreSQL type (by name, then by category) → the JSON value pgactions reads it as (docs/types.md).
_BY_NAME: dict[str, dict[str, Any]] = {
    "int2": {"type": "integer"}, "int4": {"type": "integer"}, "oid": {"type": "integer"},
    "int8": {"type": ["integer", "string"], "description": "a string beyond ±2^53"},
    "float4": {"type": ["number", "string"], "description": "NaN and ±Infinity as strings"},
    "float8": {"type": ["number", "string"], "description": "NaN and ±Infinity as strings"},
    "numeric": {"type": "string", "format": "decimal"}, "money": {"type": "string"},
    "bool": {"type": "boolean"}, "json": {}, "jsonb": {},
    "date": {"type": "string", "format": "date"}, "timestamp": {"type": "string", "format": "date-time"},
    "timestamptz": {"type": "string", "format": "date-time"}, "time": {"type": "string", "format": "time"},
    "timetz": {"type": "string", "format": "time"}, "interval": {"type": "string", "format": "duration"},
    "uuid": {"type": "string", "format": "uuid"}, "bytea": {"type": "string", "contentEncoding": "base64"},
}


def json_schema_of(name: str, category: str, element: str | None, element_category: str | None,
                   labels: list[str] | None) -> dict[str, Any]:
    if category == "A" and element:
        return {"type": "array", "items": json_schema_of(element, element_category or "S", None, None, labels)}
    if labels:
        return {"type": "string", "enum": labels}
    return dict(_BY_NAME.get(name, {"type": "string"}))


def _insert_schema(columns: list[dict[str, Any]]) -> dict[str, Any]:
    """A JSON Schema of an Insert Row form: the columns one may give, required ones marked."""
    properties = {}
    required = []
    for c in columns:
        if c["generated"] or c["identity"] == "always":
            continue
        schema = dict(c["json"], title=c["name"])
        if c["comment"]:
            schema["description"] = c["comment"]
        if c["nullable"] and "type" in schema:
            kinds = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
            schema["type"] = [*kinds, "null"]
        properties[c["name"]] = schema
        if not c["nullable"] and c["default"] is None and c["identity"] is None:
            required.append(c["name"])
    return {"type": "object", "properties": properties, "required": required, "additionalProperties": False}

"""Know the database: schemas, tables, table metadata, records by filter, one row by key."""

from __future__ import annotations

import pytest

from pgactions import ActionError, Runtime

pytestmark = pytest.mark.pooler_modes

SHOP = """
CREATE TYPE order_state AS ENUM ('new', 'paid', 'shipped');
CREATE DOMAIN positive_int AS integer CHECK (VALUE > 0);
CREATE TABLE customers (
    id int GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    email text NOT NULL UNIQUE,
    name text NOT NULL,
    tags text[] NOT NULL DEFAULT '{}',
    prefs jsonb,
    created_at timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE customers IS 'People who buy';
COMMENT ON COLUMN customers.email IS 'Login e-mail';
CREATE TABLE orders (
    id bigserial PRIMARY KEY,
    customer_id int NOT NULL REFERENCES customers(id) ON DELETE CASCADE,
    state order_state NOT NULL DEFAULT 'new',
    states order_state[],
    qty positive_int NOT NULL,
    total numeric(10,2) CHECK (total >= 0),
    total_with_tax numeric GENERATED ALWAYS AS (total * 1.2) STORED,
    parent_id bigint REFERENCES orders(id),
    UNIQUE (customer_id, id)
);
CREATE INDEX orders_state_idx ON orders (state) WHERE state <> 'shipped';
CREATE VIEW paid_orders AS SELECT * FROM orders WHERE state = 'paid';
CREATE MATERIALIZED VIEW order_counts AS SELECT customer_id, count(*) FROM orders GROUP BY 1;
CREATE TABLE events (id int, at date NOT NULL) PARTITION BY RANGE (at);
CREATE TABLE events_2026 PARTITION OF events FOR VALUES FROM ('2026-01-01') TO ('2027-01-01');
INSERT INTO customers (email, name, tags, prefs) VALUES
    ('ann@example.com', 'Ann', '{vip,early}', '{"lang": "en"}'),
    ('bob@example.com', 'Bob', '{}', NULL),
    ('cy@example.com', 'Cy', '{early}', '{"lang": "fr"}');
INSERT INTO orders (customer_id, state, qty, total) VALUES (1, 'paid', 2, 10), (1, 'new', 1, 5.5), (2, 'shipped', 3, 99);
"""


@pytest.fixture
def shop(db):
    db.sql(SHOP)
    return db


def test_list_schemas(runtime: Runtime, shop) -> None:
    out = runtime.run("list_schemas", shop.profile, {}).data
    names = [s["name"] for s in out["schemas"]]
    assert shop.schema in names and "public" in names and "pg_catalog" not in names
    mine = next(s for s in out["schemas"] if s["name"] == shop.schema)
    assert mine == {"name": shop.schema, "owner": "app", "comment": None, "system": False, "usage": True}
    every = runtime.run("list_schemas", shop.profile, {"includeSystem": True}).data["schemas"]
    assert {"pg_catalog", "information_schema"} <= {s["name"] for s in every}


def test_list_tables(runtime: Runtime, shop, pg) -> None:
    shop.sql("ANALYZE customers")
    expected = {"customers": "table", "orders": "table", "paid_orders": "view", "order_counts": "materialized view",
                "events": "partitioned table"}
    with pg.admin() as admin:  # a foreign table needs an extension (contrib; not in the embedded build)
        if admin.execute("SELECT 1 FROM pg_available_extensions WHERE name = 'file_fdw'").fetchone():
            admin.execute("CREATE EXTENSION IF NOT EXISTS file_fdw")
            admin.execute("CREATE SERVER IF NOT EXISTS files FOREIGN DATA WRAPPER file_fdw")
            admin.execute(f'CREATE FOREIGN TABLE "{shop.schema}".imported (line text) SERVER files '
                          "OPTIONS (filename '/dev/null', format 'text')")
            expected["imported"] = "foreign table"
    tables = {t["name"]: t for t in runtime.run("list_tables", shop.profile, {}).data["tables"]}
    assert {n: t["kind"] for n, t in tables.items()} == expected
    assert tables["customers"]["estimatedRows"] == 3 and tables["customers"]["comment"] == "People who buy"
    assert tables["customers"]["sizeBytes"] > 0
    only_views = runtime.run("list_tables", shop.profile, {"kinds": ["view"], "schema": shop.schema}).data
    assert [t["name"] for t in only_views["tables"]] == ["paid_orders"]
    with_parts = runtime.run("list_tables", shop.profile, {"includePartitions": True}).data["tables"]
    assert any(t["name"] == "events_2026" and t["isPartition"] for t in with_parts)


def test_get_table_metadata(runtime: Runtime, shop) -> None:
    meta = runtime.run("get_table_metadata", shop.profile, {"table": "orders"}).data
    assert (meta["name"], meta["schema"], meta["kind"]) == ("orders", shop.schema, "table")
    cols = {c["name"]: c for c in meta["columns"]}
    assert cols["id"]["type"] == "bigint" and cols["id"]["default"].startswith("nextval(")
    assert cols["id"]["json"] == {"type": ["integer", "string"], "description": "a string beyond ±2^53"}
    assert cols["state"]["json"] == {"type": "string", "enum": ["new", "paid", "shipped"]}
    assert cols["states"]["json"] == {"type": "array", "items": {"type": "string", "enum": ["new", "paid", "shipped"]}}
    assert cols["qty"]["type"] == "positive_int" and cols["qty"]["json"] == {"type": "integer"}  # domain → base
    assert cols["total"]["type"] == "numeric(10,2)" and cols["total"]["json"]["format"] == "decimal"
    assert cols["total_with_tax"]["generated"] == "stored" and cols["customer_id"]["nullable"] is False
    assert meta["primaryKey"] == {"name": "orders_pkey", "columns": ["id"]}
    assert meta["uniqueConstraints"] == [{"name": "orders_customer_id_id_key", "columns": ["customer_id", "id"]}]
    fks = {f["name"]: f for f in meta["foreignKeys"]}
    assert fks["orders_customer_id_fkey"]["references"] == {"schema": shop.schema, "table": "customers", "columns": ["id"]}
    assert fks["orders_customer_id_fkey"]["onDelete"] == "CASCADE"
    assert [r["table"] for r in meta["referencedBy"]] == ["orders"]  # its own parent_id
    assert [c["name"] for c in meta["checkConstraints"]] == ["orders_total_check"]
    indexes = {i["name"]: i for i in meta["indexes"]}
    assert indexes["orders_pkey"]["primary"] and indexes["orders_state_idx"]["columns"] == ["state"]
    assert "WHERE" in indexes["orders_state_idx"]["definition"]
    form = meta["insertSchema"]
    assert "total_with_tax" not in form["properties"] and set(form["required"]) == {"customer_id", "qty"}
    assert form["properties"]["total"]["type"] == ["string", "null"]

    customers = runtime.run("get_table_metadata", shop.profile, {"table": "customers"}).data
    ccols = {c["name"]: c for c in customers["columns"]}
    assert ccols["id"]["identity"] == "always" and "id" not in customers["insertSchema"]["properties"]
    assert ccols["email"]["comment"] == "Login e-mail" and ccols["prefs"]["json"] == {}
    assert ccols["tags"]["json"] == {"type": "array", "items": {"type": "string"}}
    assert [(r["table"], r["columns"]) for r in customers["referencedBy"]] == [("orders", ["customer_id"])]
    assert set(customers["insertSchema"]["required"]) == {"email", "name"}


def test_get_table_metadata_of_a_missing_table(runtime: Runtime, shop) -> None:
    with pytest.raises(ActionError) as info:
        runtime.run("get_table_metadata", shop.profile, {"table": "nope"})
    assert info.value.code == "UNDEFINED_TABLE"


def test_find_rows(runtime: Runtime, shop) -> None:
    def find(**inputs) -> list:
        return runtime.run("find_rows", shop.profile, {"table": "customers", **inputs}).data["rows"]

    assert [r["name"] for r in find(orderBy=[{"column": "name", "direction": "desc"}], select=["name"])] == ["Cy", "Bob", "Ann"]
    assert find(where=[{"column": "email", "operator": "eq", "value": "bob@example.com"}], select=["id", "name"]) == [
        {"id": 2, "name": "Bob"}]
    names = lambda rows: [r["name"] for r in rows]  # noqa: E731
    assert names(find(where=[{"column": "name", "operator": "neq", "value": "Bob"}], orderBy=[{"column": "id"}])) == ["Ann", "Cy"]
    assert names(find(where=[{"column": "tags", "operator": "contains", "value": ["early"]}], orderBy=[{"column": "id"}])) == ["Ann", "Cy"]
    assert names(find(where=[{"column": "prefs", "operator": "contains", "value": {"lang": "fr"}}])) == ["Cy"]
    assert names(find(where=[{"column": "prefs", "operator": "is", "value": None}])) == ["Bob"]
    assert names(find(where=[{"column": "id", "operator": "in", "value": [1, 3]}], orderBy=[{"column": "id"}])) == ["Ann", "Cy"]
    assert names(find(where=[{"column": "email", "operator": "like", "value": "%@example.com"}], limit=1, offset=1,
                      orderBy=[{"column": "id"}])) == ["Bob"]
    assert names(find(where=[{"or": [{"column": "name", "value": "Ann"}, {"column": "name", "operator": "ilike", "value": "c%"}]}],
                      orderBy=[{"column": "id"}])) == ["Ann", "Cy"]
    with pytest.raises(ActionError) as info:
        find(where=[{"column": "email", "value": "{{ trigger.email }}"}])  # no such value in the flow data
    assert info.value.code == "TEMPLATE_ERROR"
    rows = runtime.run("find_rows", shop.profile, {"table": "customers", "where": [
        {"column": "email", "value": "{{ trigger.email }}"}]}, {"trigger": {"email": "cy@example.com"}}).data["rows"]
    assert [r["name"] for r in rows] == ["Cy"]
    with pytest.raises(ActionError) as info:
        find(orderBy=[{"column": "nope"}])
    assert info.value.code == "UNDEFINED_COLUMN" and info.value.payload["field"] == "orderBy/0/column"


def test_get_row(runtime: Runtime, shop) -> None:
    out = runtime.run("get_row", shop.profile, {"table": "customers", "key": {"id": "{{ trigger.id }}"},
                                               "select": ["id", "email"]}, {"trigger": {"id": 2}}).data
    assert out == {"row": {"id": 2, "email": "bob@example.com"}}
    by_where = runtime.run("get_row", shop.profile, {"table": "orders", "where": [
        {"column": "state", "value": "shipped"}], "select": ["customer_id"]}).data
    assert by_where == {"row": {"customer_id": 2}}
    with pytest.raises(ActionError) as info:
        runtime.run("get_row", shop.profile, {"table": "customers", "key": {"id": 42}})
    assert info.value.code == "NOT_FOUND" and "id = 42" in info.value.payload["detail"]
    with pytest.raises(ActionError) as info:
        runtime.run("get_row", shop.profile, {"table": "orders", "key": {"customer_id": 1}})
    assert info.value.code == "MULTIPLE_ROWS"
    with pytest.raises(ActionError) as info:
        runtime.run("get_row", shop.profile, {"table": "orders"})
    assert info.value.code == "INVALID_INPUT"

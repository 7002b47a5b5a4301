-- Sample data for the demo: several schemas, many types, a few thousand rows.
CREATE SCHEMA shop;
CREATE TYPE shop.order_status AS ENUM ('new', 'paid', 'shipped', 'cancelled');
CREATE DOMAIN shop.email AS text CHECK (VALUE LIKE '%@%');

CREATE TABLE shop.customers (
    id          bigserial PRIMARY KEY,
    name        text NOT NULL,
    email       shop.email NOT NULL UNIQUE,
    tags        text[] NOT NULL DEFAULT '{}',
    profile     jsonb,
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE shop.orders (
    id          bigserial PRIMARY KEY,
    customer_id bigint NOT NULL REFERENCES shop.customers(id),
    status      shop.order_status NOT NULL,
    total       numeric(12, 2) NOT NULL,
    placed_at   timestamptz NOT NULL,
    note        text
);
CREATE INDEX ON shop.orders (customer_id);

CREATE TABLE shop.invoices (
    order_id    bigint PRIMARY KEY REFERENCES shop.orders(id),
    pdf         bytea NOT NULL,
    issued_on   date NOT NULL
);

CREATE TABLE public.events (
    id          bigint GENERATED ALWAYS AS IDENTITY,
    happened_at timestamptz NOT NULL,
    payload     json NOT NULL,
    PRIMARY KEY (id, happened_at)
) PARTITION BY RANGE (happened_at);
CREATE TABLE public.events_2025 PARTITION OF public.events FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
CREATE TABLE public.events_2026 PARTITION OF public.events FOR VALUES FROM ('2026-01-01') TO ('2027-01-01');

INSERT INTO shop.customers (name, email, tags, profile, created_at)
SELECT 'Customer ' || g || ' — Ünïcødé ✓',
       'user' || g || '@example.org',
       ARRAY['tag' || (g % 7), 'vip' || (g % 3)],
       jsonb_build_object('age', 18 + g % 60, 'city', (ARRAY['Zürich', 'São Paulo', '東京', 'Oslo'])[1 + g % 4]),
       timestamptz '2025-01-01 00:00:00+00' + g * interval '37 minutes'
FROM generate_series(1, 2000) AS g;

INSERT INTO shop.orders (customer_id, status, total, placed_at, note)
SELECT 1 + (g % 2000),
       (ARRAY['new', 'paid', 'shipped', 'cancelled']::shop.order_status[])[1 + g % 4],
       round((g * 7.31) % 1000, 2),
       timestamptz '2025-06-01 00:00:00+00' + g * interval '11 minutes',
       CASE WHEN g % 5 = 0 THEN 'gift wrap, please; "fragile"' END
FROM generate_series(1, 5000) AS g;

INSERT INTO shop.invoices (order_id, pdf, issued_on)
SELECT id, decode(md5(id::text) || md5((id * 31)::text), 'hex'), (placed_at AT TIME ZONE 'UTC')::date
FROM shop.orders WHERE status IN ('paid', 'shipped');

INSERT INTO public.events (happened_at, payload)
SELECT timestamptz '2025-09-01 00:00:00+00' + g * interval '3 hours',
       json_build_object('kind', 'tick', 'n', g)
FROM generate_series(1, 3000) AS g;

CREATE VIEW shop.revenue AS
    SELECT c.id, c.name, sum(o.total) AS revenue FROM shop.customers c JOIN shop.orders o ON o.customer_id = c.id
    GROUP BY c.id, c.name;
CREATE MATERIALIZED VIEW shop.daily_orders AS
    SELECT placed_at::date AS day, count(*) AS n FROM shop.orders GROUP BY 1;

CREATE FUNCTION shop.touch() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN NEW.note := coalesce(NEW.note, '') || ' (edited)'; RETURN NEW; END $$;
CREATE TRIGGER orders_touch BEFORE UPDATE ON shop.orders FOR EACH ROW EXECUTE FUNCTION shop.touch();

-- A database exercising what a logical backup must carry.
CREATE SCHEMA app;
CREATE SCHEMA "Weird Schema";
CREATE TYPE app.mood AS ENUM ('sad', 'ok', 'happy');
CREATE DOMAIN app.positive AS numeric CHECK (VALUE > 0);
CREATE SEQUENCE app.ticket_seq START 1000 INCREMENT 7;

CREATE TABLE app.everything (
    id          integer PRIMARY KEY DEFAULT nextval('app.ticket_seq'),
    j           json,
    jb          jsonb,
    arr         integer[],
    txt_arr     text[],
    b           bytea,
    n           numeric(30, 10),
    amount      app.positive,
    ts          timestamptz,
    d           date,
    iv          interval,
    m           app.mood,
    u           uuid,
    ip          inet,
    rng         int4range,
    t           text
);
INSERT INTO app.everything (j, jb, arr, txt_arr, b, n, amount, ts, d, iv, m, u, ip, rng, t)
SELECT json_build_object('k', g, 'nested', json_build_array(g, 'x')),
       jsonb_build_object('k', g, 'flag', g % 2 = 0),
       ARRAY[g, g * 2, NULL],
       ARRAY['a,b', 'quote"d', E'new\nline'],
       decode(repeat(lpad(to_hex(g % 256), 2, '0'), 16), 'hex'),
       g * 1234.5678901234,
       g + 0.5,
       timestamptz '2024-02-29 12:00:00+05:30' + g * interval '1 hour',
       date '2000-01-01' + g,
       make_interval(days => g),
       (ARRAY['sad', 'ok', 'happy']::app.mood[])[1 + g % 3],
       md5(g::text)::uuid,
       ('10.0.' || (g % 256) || '.1')::inet,
       int4range(g, g + 10),
       'Grüße, 日本語, emoji 🐘, tab	and ''quotes'' ' || g
FROM generate_series(1, 1500) AS g;

CREATE TABLE "Weird Schema"."Mixed Case Table" ("Col One" text, "select" int);
INSERT INTO "Weird Schema"."Mixed Case Table" SELECT 'row ' || g, g FROM generate_series(1, 50) g;

CREATE TABLE app.measurements (
    city_id int NOT NULL, logdate date NOT NULL, peak int
) PARTITION BY RANGE (logdate);
CREATE TABLE app.measurements_2025 PARTITION OF app.measurements FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
CREATE TABLE app.measurements_2026 PARTITION OF app.measurements FOR VALUES FROM ('2026-01-01') TO ('2027-01-01');
INSERT INTO app.measurements SELECT g % 10, date '2025-01-01' + g, g FROM generate_series(0, 700) g;

CREATE TABLE app.audit (id bigserial PRIMARY KEY, what text, at timestamptz DEFAULT now());
CREATE FUNCTION app.log_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN INSERT INTO app.audit (what) VALUES (TG_OP || ' ' || NEW.id); RETURN NEW; END $$;
CREATE TRIGGER everything_audit AFTER UPDATE ON app.everything FOR EACH ROW EXECUTE FUNCTION app.log_change();
UPDATE app.everything SET t = t || '!' WHERE id % 100 = 0;

CREATE VIEW app.happy AS SELECT id, t FROM app.everything WHERE m = 'happy';
CREATE MATERIALIZED VIEW app.mood_counts AS SELECT m, count(*) AS n FROM app.everything GROUP BY m;
CREATE UNLOGGED TABLE app.cache (k text PRIMARY KEY, v text);
INSERT INTO app.cache SELECT 'k' || g, repeat('v', g) FROM generate_series(1, 20) g;

CREATE TABLE app.docs (id int PRIMARY KEY, blob oid);
INSERT INTO app.docs VALUES (1, lo_from_bytea(0, convert_to('large object content ✓', 'UTF8')));
COMMENT ON TABLE app.everything IS 'Every type we care about';

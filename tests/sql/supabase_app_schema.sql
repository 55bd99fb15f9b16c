-- Schema `app`: an application written the way Supabase projects are, applied on the
-- source only (after the Supabase platform and the seeded auth users). `supamove schema`
-- must turn it into something a plain PostgreSQL accepts: profiles kept by a trigger on
-- auth.users (handle_new_user), policies calling auth.uid(), an extensions.citext column,
-- grants to Supabase's API roles, a table in the Realtime publication.

CREATE EXTENSION IF NOT EXISTS citext WITH SCHEMA extensions;
CREATE SCHEMA app AUTHORIZATION supabase_app;
GRANT USAGE ON SCHEMA app TO anon, authenticated, service_role;

SET ROLE supabase_app;

CREATE TYPE app.note_kind AS ENUM ('memo', 'todo', 'idea');
CREATE DOMAIN app.score AS integer CHECK (VALUE BETWEEN 0 AND 100);
-- Free-standing: used by a default, owned by no column.
CREATE SEQUENCE app.invoice_number_seq START 1000;

CREATE TABLE app.profiles (
    id uuid PRIMARY KEY REFERENCES auth.users(id) ON DELETE CASCADE,
    email extensions.citext NOT NULL UNIQUE,
    display_name text,
    created_at timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE app.profiles IS 'One row per user, made by handle_new_user.';

CREATE TABLE app.notes (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    owner_id uuid NOT NULL REFERENCES app.profiles(id),
    kind app.note_kind NOT NULL DEFAULT 'memo',
    body text NOT NULL,
    score app.score,
    words integer GENERATED ALWAYS AS (array_length(regexp_split_to_array(body, '\s+'), 1)) STORED
);
CREATE INDEX notes_owner_idx ON app.notes (owner_id);

CREATE TABLE app.invoices (
    number bigint PRIMARY KEY DEFAULT nextval('app.invoice_number_seq'),
    owner_id uuid NOT NULL REFERENCES auth.users(id),
    total numeric(12,2) NOT NULL
);

CREATE TABLE app.events (
    id bigserial,
    at date NOT NULL,
    what text NOT NULL,
    PRIMARY KEY (id, at)
) PARTITION BY RANGE (at);
CREATE TABLE app.events_2024 PARTITION OF app.events FOR VALUES FROM ('2024-01-01') TO ('2025-01-01');
CREATE TABLE app.events_2025 PARTITION OF app.events FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');

CREATE FUNCTION app.note_count(owner uuid) RETURNS bigint
    LANGUAGE sql STABLE
AS $$ SELECT count(*) FROM app.notes WHERE owner_id = owner $$;

CREATE VIEW app.profile_notes AS
    SELECT p.id, p.email, app.note_count(p.id) AS notes FROM app.profiles p;
CREATE MATERIALIZED VIEW app.note_totals AS
    SELECT kind, count(*) AS notes FROM app.notes GROUP BY kind;
-- A view over a platform table: it cannot exist without Supabase Auth.
CREATE VIEW app.user_emails AS SELECT id, email FROM auth.users;

ALTER TABLE app.notes ENABLE ROW LEVEL SECURITY;
CREATE POLICY "Owners read their notes" ON app.notes
    FOR SELECT USING (owner_id = auth.uid());
CREATE POLICY "Authenticated users write their notes" ON app.notes
    FOR INSERT TO authenticated WITH CHECK (owner_id = (SELECT auth.uid()));

GRANT SELECT ON app.profiles, app.notes TO anon, authenticated;
GRANT ALL ON app.invoices TO service_role;

RESET ROLE;

-- Supabase's handle_new_user pattern: a function in the application's schema, fired by
-- a trigger on auth.users.
CREATE FUNCTION app.handle_new_user() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = ''
AS $$
BEGIN
    INSERT INTO app.profiles (id, email) VALUES (NEW.id, NEW.email);
    RETURN NEW;
END;
$$;
ALTER FUNCTION app.handle_new_user() OWNER TO supabase_app;
CREATE TRIGGER on_auth_user_created AFTER INSERT ON auth.users
    FOR EACH ROW EXECUTE FUNCTION app.handle_new_user();

ALTER PUBLICATION supabase_realtime ADD TABLE app.notes;

-- Rows: a profile for some of the seeded users, their notes, invoices and events.
INSERT INTO app.profiles (id, email, display_name, created_at)
SELECT id, email, 'User ' || left(id::text, 8), '2024-03-01'::timestamptz
FROM (SELECT DISTINCT ON (lower(email)) id, email FROM auth.users
      WHERE email LIKE '%@%' AND deleted_at IS NULL ORDER BY lower(email), created_at) u
ORDER BY id LIMIT 20;
INSERT INTO app.notes (owner_id, kind, body, score)
SELECT p.id, (ARRAY['memo', 'todo', 'idea'])[1 + i % 3]::app.note_kind, 'note ' || i || ' of the day', i * 7 % 101
FROM (SELECT id, row_number() OVER (ORDER BY id) AS n FROM app.profiles) p, generate_series(1, 3) i;
INSERT INTO app.invoices (owner_id, total) SELECT id, 19.90 FROM app.profiles ORDER BY id LIMIT 5;
INSERT INTO app.events (at, what)
SELECT '2024-06-01'::date + i * 30, 'event ' || i FROM generate_series(1, 12) i;
REFRESH MATERIALIZED VIEW app.note_totals;

-- Schema `billing`, source only, after edge_data.sql: a second application schema holding user ids,
-- left out by an export of public and edge. payments.payer_ref mixes user ids with other ids (outside
-- companies): an export of it stops until the operator decides.
CREATE SCHEMA billing;
CREATE SEQUENCE billing.invoice_number_seq START WITH 1000;
CREATE TABLE billing.invoices (
    id integer PRIMARY KEY,
    number bigint NOT NULL DEFAULT nextval('billing.invoice_number_seq'),
    customer_id uuid NOT NULL REFERENCES auth.users(id),
    amount numeric(10,2) NOT NULL
);
CREATE TABLE billing.payments (
    id integer PRIMARY KEY,
    invoice_id integer NOT NULL REFERENCES billing.invoices(id),
    payer_ref uuid,
    amount numeric(10,2) NOT NULL
);

INSERT INTO billing.invoices (id, customer_id, amount)
SELECT p.n, p.id, 10 * p.n FROM (SELECT id, row_number() OVER (ORDER BY id)::int AS n
                                 FROM public.profiles ORDER BY id LIMIT 3) p;
SELECT setval('billing.invoice_number_seq', 6000);
INSERT INTO billing.payments (id, invoice_id, payer_ref, amount)
SELECT id, id, customer_id, amount FROM billing.invoices;
INSERT INTO billing.payments (id, invoice_id, payer_ref, amount) VALUES
    (4, 1, 'c0ffee00-0000-4000-8000-000000000001', 5.00),
    (5, 2, 'c0ffee00-0000-4000-8000-000000000002', 5.00);

GRANT USAGE ON SCHEMA billing TO supabase_app;
GRANT SELECT ON ALL TABLES IN SCHEMA billing TO supabase_app;
GRANT SELECT ON ALL SEQUENCES IN SCHEMA billing TO supabase_app;

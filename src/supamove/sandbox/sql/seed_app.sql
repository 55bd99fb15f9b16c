-- FreshTrack's application data but readings, one statement at a time (they take parameters).
-- Numbering: organization o in [0, orgs), site s = 3*o + j, unit u = 4*s + j, sensor
-- k = 2*u + j; generated user n belongs to organization mod(n, orgs).

INSERT INTO public.organizations (id, name, slug, plan, settings, created_at, updated_at)
SELECT md5('supamove-org:' || o)::uuid,
       CASE WHEN o = 0 THEN 'FreshTrack Demo Foods'
            ELSE (ARRAY['Harbor Fish Market', 'Green Leaf Grocers', 'Café Élan', 'Nordic Cold Storage',
                        'Sunrise Bakery', 'Trattoria Bella', 'Sushi Zen 寿司', 'MediPharm Clinic',
                        'Campus Dining', 'Farm & Fork'])[1 + mod(o, 10)]
                 || CASE WHEN o >= 10 THEN ' #' || (o / 10 + 1) ELSE '' END END,
       'org-' || lpad(o::text, 4, '0'),
       (ARRAY['starter', 'pro', 'enterprise'])[1 + mod(o, 3)],
       jsonb_build_object(
           'temperature_unit', CASE WHEN mod(o, 4) = 1 THEN 'F' ELSE 'C' END,
           'timezone', (ARRAY['Europe/Berlin', 'America/New_York', 'Asia/Tokyo', 'Europe/London',
                              'America/Los_Angeles', 'Australia/Sydney'])[1 + mod(o, 6)],
           'escalation_minutes', 15 + mod(o, 4) * 15,
           'features', CASE WHEN mod(o, 3) = 2 THEN '["sms", "reports", "haccp"]'::jsonb
                            ELSE '["reports"]'::jsonb END,
           'haccp', jsonb_build_object('log_retention_days', 365, 'auditor', NULL)),
       %(epoch)s::timestamptz - interval '200 days' + o * interval '1 day',
       %(epoch)s::timestamptz - interval '200 days' + o * interval '1 day' + interval '3 hours'
FROM generate_series(0, %(orgs)s - 1) o;

INSERT INTO public.profiles (id, organization_id, full_name, role, phone, avatar_url, timezone, created_at)
SELECT s.id, md5('supamove-org:' || s.org)::uuid, s.name, s.role, s.phone, NULL, 'UTC', u.created_at
FROM unnest(%(special_ids)s::uuid[], %(special_names)s::text[], %(special_roles)s::text[],
            %(special_orgs)s::int[], %(special_phones)s::text[]) AS s(id, name, role, org, phone)
JOIN auth.users u ON u.id = s.id
UNION ALL
SELECT md5('supamove-user:' || n)::uuid, md5('supamove-org:' || mod(n, %(orgs)s))::uuid,
       u.raw_user_meta_data ->> 'full_name',
       CASE WHEN n <= %(orgs)s THEN 'owner' WHEN mod(n, 5) = 0 THEN 'manager'
            WHEN mod(n, 7) = 0 THEN 'viewer' ELSE 'staff' END,
       CASE WHEN mod(n, 4) = 0 THEN '+1555' || lpad(n::text, 7, '0') END,
       CASE WHEN mod(n, 3) = 0 THEN 'https://cdn.freshtrack.test/avatars/' || n || '.png' END,
       (ARRAY['UTC', 'Europe/Berlin', 'America/New_York'])[1 + mod(n, 3)], u.created_at
FROM generate_series(1, %(bulk)s) n
JOIN auth.users u ON u.id = md5('supamove-user:' || n)::uuid;

INSERT INTO public.org_members (organization_id, user_id, role, created_at)
SELECT organization_id, id, role::public.org_role, created_at + interval '1 minute'
FROM public.profiles
UNION ALL
SELECT md5('supamove-org:' || mod(n + 1, %(orgs)s))::uuid, md5('supamove-user:' || n)::uuid,
       'viewer', %(epoch)s::timestamptz - interval '20 days' + n * interval '1 minute'
FROM generate_series(17, %(bulk)s, 17) n;

INSERT INTO public.sites (id, organization_id, name, address, timezone, latitude, longitude,
                          created_at, updated_at)
SELECT md5('supamove-site:' || s)::uuid, md5('supamove-org:' || (s / 3))::uuid,
       (ARRAY['Main Kitchen', 'Central Warehouse', 'Downtown Store'])[1 + mod(s, 3)],
       (1 + mod(s * 37, 899)) || ' ' ||
       (ARRAY['Harbour Road', 'Königstraße', 'Rue de Rivoli', 'Elm Street', 'Calle Mayor'])[1 + mod(s, 5)],
       o.settings ->> 'timezone',
       round((47.0 + mod(s * 7919, 100000) / 100000.0 * 5)::numeric, 6),
       round((8.0 + mod(s * 104729, 100000) / 100000.0 * 6)::numeric, 6),
       o.created_at + interval '1 hour', o.created_at + interval '1 hour'
FROM generate_series(0, %(orgs)s * 3 - 1) s
JOIN public.organizations o ON o.id = md5('supamove-org:' || (s / 3))::uuid;

CREATE TEMP TABLE seed_unit_type ON COMMIT DROP AS
SELECT * FROM (VALUES
    (0, 'fridge'::public.unit_type, 0.00, 5.00),
    (1, 'freezer', -25.00, -15.00),
    (2, 'walk_in_cooler', 1.00, 4.00),
    (3, 'walk_in_freezer', -23.00, -18.00),
    (4, 'blast_chiller', -40.00, 3.00),
    (5, 'display_case', 1.00, 6.50)) AS t(i, unit_type, temp_min, temp_max);

INSERT INTO public.units (id, site_id, name, unit_type, temp_min, temp_max, is_active, created_at,
                          updated_at)
SELECT md5('supamove-unit:' || u)::uuid, md5('supamove-site:' || (u / 4))::uuid,
       initcap(replace(t.unit_type::text, '_', '-')) || ' ' || (1 + mod(u, 4)),
       t.unit_type, t.temp_min, t.temp_max, mod(u, 23) <> 22,
       %(epoch)s::timestamptz - interval '150 days' + u * interval '10 minutes',
       %(epoch)s::timestamptz - interval '150 days' + u * interval '10 minutes'
           + CASE WHEN mod(u, 5) = 0 THEN interval '40 days' ELSE interval '0' END
FROM generate_series(0, %(units)s - 1) u
JOIN seed_unit_type t ON t.i = mod(u * 5, 6);

INSERT INTO public.sensors (id, unit_id, serial_number, model, firmware_version, installed_at,
                            last_seen_at, battery_level, created_at)
SELECT md5('supamove-sensor:' || k)::uuid, md5('supamove-unit:' || (k / 2))::uuid,
       'FT' || lpad(k::text, 6, '0') || CASE WHEN mod(k, 2) = 0 THEN '-T' ELSE '-H' END,
       CASE WHEN mod(k, 2) = 0 THEN 'FT-Probe T1' ELSE 'FT-Climate H2' END,
       '2.' || mod(k, 3) || '.' || mod(k, 7),
       %(epoch)s::timestamptz - interval '30 days' + mod(k, 48) * interval '1 hour',
       CASE WHEN k < %(rows)s THEN %(epoch)s::timestamptz
            + make_interval(secs => ((%(rows)s - 1 - k) / %(sensors)s) * 300 + mod(k, 300)) END,
       CASE WHEN k < %(rows)s THEN greatest(5, 100 - ((%(rows)s - 1 - k) / %(sensors)s) / 150)
            ELSE 100 END,
       %(epoch)s::timestamptz - interval '30 days' + mod(k, 48) * interval '1 hour'
FROM generate_series(0, %(sensors)s - 1) k;

INSERT INTO public.alerts (id, unit_id, sensor_id, severity, status, message, temperature,
                           acknowledged_by, acknowledged_at, resolved_at, created_at)
SELECT g.a, un.id, md5('supamove-sensor:' || (g.u * 2))::uuid, g.severity,
       g.status::public.alert_status,
       CASE WHEN g.severity = 'info' THEN un.name || ': sensor battery low'
            ELSE un.name || ': ' || round(un.temp_max + g.excess, 2) || ' °C outside '
                 || un.temp_min || '..' || un.temp_max || ' °C' END,
       CASE WHEN g.severity <> 'info' THEN (un.temp_max + g.excess)::float8 END,
       CASE WHEN g.status <> 'open' AND mod(g.a, 9) <> 0 THEN
            CASE WHEN g.o = 0 THEN (%(ackers)s::uuid[])[1 + mod(g.a / 4, 4)]
                 WHEN g.c > 0 THEN md5('supamove-user:' || (g.o + %(orgs)s * mod(g.a / 4, g.c)))::uuid
            END END,
       CASE WHEN g.status <> 'open' THEN g.created + (5 + mod(g.a, 40)) * interval '1 minute' END,
       CASE WHEN g.status = 'resolved' THEN g.created + interval '1 hour'
            + mod(g.a, 120) * interval '1 minute' END,
       g.created
FROM (
    SELECT a, u, u / 12 AS o,
           CASE WHEN %(bulk)s >= u / 12 THEN (%(bulk)s - u / 12) / %(orgs)s + 1 ELSE 0 END AS c,
           CASE WHEN mod(a, 10) < 2 THEN 'info' WHEN mod(a, 10) < 7 THEN 'warning'
                ELSE 'critical' END::public.alert_severity AS severity,
           (ARRAY['open', 'acknowledged', 'resolved', 'resolved'])[1 + mod(a, 4)] AS status,
           CASE WHEN mod(a, 10) < 7 THEN 1.5 + mod(a, 5) * 0.5 ELSE 6.0 + mod(a, 7) END AS excess,
           %(epoch)s::timestamptz + ((a::bigint * 2592000) / %(alerts)s) * interval '1 second' AS created
    FROM (SELECT a, mod(a * 7, %(units)s) AS u FROM generate_series(1, %(alerts)s) a) x
) g
JOIN public.units un ON un.id = md5('supamove-unit:' || g.u)::uuid
ORDER BY g.a;

INSERT INTO public.alert_subscriptions (id, organization_id, unit_id, min_severity, channels,
                                        notify_user_ids, created_at, updated_at)
SELECT md5('supamove-sub:unit:' || u)::uuid, md5('supamove-org:' || (u / 12))::uuid,
       md5('supamove-unit:' || u)::uuid,
       CASE WHEN mod(u, 2) = 0 THEN 'warning' ELSE 'critical' END::public.alert_severity,
       CASE mod(u, 4) WHEN 0 THEN ARRAY['email'] WHEN 1 THEN ARRAY['email', 'sms']
                      WHEN 2 THEN ARRAY['push', 'email'] ELSE ARRAY['email', 'sms', 'push'] END,
       CASE WHEN u / 12 = 0 THEN (%(ackers)s::uuid[])[1:2]
            ELSE ARRAY(SELECT md5('supamove-user:' || (u / 12 + %(orgs)s * j))::uuid
                       FROM generate_series(0, least(2, (%(bulk)s - u / 12) / %(orgs)s)) j
                       ORDER BY j) END,
       %(epoch)s::timestamptz - interval '100 days' + u * interval '1 hour',
       %(epoch)s::timestamptz - interval '100 days' + u * interval '1 hour'
FROM generate_series(0, %(units)s - 1, 3) u
UNION ALL
SELECT md5('supamove-sub:org:' || o)::uuid, md5('supamove-org:' || o)::uuid, NULL, 'critical',
       ARRAY['sms'],
       CASE WHEN o = 0 THEN %(org0_notify)s::uuid[]
            WHEN mod(o, 5) = 4 THEN '{}'::uuid[]
            ELSE ARRAY[md5('supamove-user:' || o)::uuid] END,
       %(epoch)s::timestamptz - interval '90 days', %(epoch)s::timestamptz - interval '80 days'
FROM generate_series(0, %(orgs)s - 1) o;

-- Generated users: user00001@freshtrack.test ... with pgcrypto bcrypt ($2a$06$) hashes of
-- generated_password(n) from the temporary seed_pool table; every 13th unconfirmed, every 10th
-- also linked to Google. Then the rest of the auth schema: sessions, refresh tokens, MFA, flow
-- state, audit log, SSO domains and SAML, schema_migrations. One statement at a time, each
-- ending in a semicolon at the end of a line (they take parameters).

CREATE TEMP TABLE seed_bulk ON COMMIT DROP AS
SELECT n, md5('supamove-user:' || n)::uuid AS id,
       'user' || lpad(n::text, 5, '0') || '@freshtrack.test' AS email,
       mod(n, 13) <> 0 AS confirmed, mod(n, 10) = 0 AS google,
       %(epoch)s::timestamptz - interval '120 days' + n * interval '37 minutes' AS created,
       (ARRAY['Amelia', 'Ben', 'Chiara', 'Dmitri', 'Émile', 'Fatima', 'Göran', 'Hana', 'Inès',
              'Jonas', 'Kwame', 'Lucía', 'Mei', 'Nikolai', 'Oona', 'Priya', 'Quentin', 'Rosa',
              'Søren', 'Tomás', 'Ute', 'Valentina', 'Wei', 'Xóchitl', 'Yusuf', 'Zanele'])[1 + mod(n, 26)]
       || ' ' ||
       (ARRAY['Andersen', 'Brown', 'Chen', 'Dubois', 'Eriksen', 'Fernández', 'García', 'Hoffmann',
              'Ivanova', 'Jensen', 'Kowalski', 'López', 'Müller', 'Nakamura', 'O''Brien', 'Petrov',
              'Quispe', 'Rossi', 'Schmidt', 'Tanaka', 'Ünal', 'Virtanen', 'Wójcik', 'Xu', 'Yılmaz',
              'Zhang'])[1 + mod(n * 7, 26)] AS full_name
FROM generate_series(1, %(bulk)s) n;

INSERT INTO auth.users (
    instance_id, id, aud, role, email, encrypted_password, email_confirmed_at, confirmation_token,
    confirmation_sent_at, recovery_token, email_change_token_new, email_change, last_sign_in_at,
    raw_app_meta_data, raw_user_meta_data, created_at, updated_at, is_sso_user, is_anonymous)
SELECT '00000000-0000-0000-0000-000000000000', b.id, 'authenticated', 'authenticated', b.email,
       p.hash, CASE WHEN b.confirmed THEN b.created + interval '7 minutes' END,
       CASE WHEN b.confirmed THEN '' ELSE md5('supamove-confirm:' || b.n) END, b.created, '', '', '',
       CASE WHEN b.confirmed THEN b.created + mod(b.n, 90) * interval '1 day' END,
       CASE WHEN b.google THEN '{"provider": "email", "providers": ["email", "google"]}'::jsonb
            ELSE '{"provider": "email", "providers": ["email"]}'::jsonb END,
       jsonb_build_object('sub', b.id::text, 'email', b.email, 'full_name', b.full_name,
                          'email_verified', b.confirmed, 'phone_verified', false),
       b.created, b.created + mod(b.n, 90) * interval '1 day', false, false
FROM seed_bulk b JOIN seed_pool p ON p.i = mod(b.n, %(pool)s)
ORDER BY b.n;

INSERT INTO auth.identities (id, user_id, provider, provider_id, identity_data, last_sign_in_at,
                             created_at, updated_at)
SELECT md5('supamove-identity:email:' || b.n)::uuid, b.id, 'email', b.id::text,
       jsonb_build_object('sub', b.id::text, 'email', b.email, 'email_verified', b.confirmed,
                          'phone_verified', false),
       CASE WHEN b.confirmed THEN b.created + mod(b.n, 90) * interval '1 day' END, b.created, b.created
FROM seed_bulk b
UNION ALL
SELECT md5('supamove-identity:google:' || b.n)::uuid, b.id, 'google', (109000000000000000000 + b.n)::text,
       jsonb_build_object('iss', 'https://accounts.google.com',
                          'sub', (109000000000000000000 + b.n)::text,
                          'provider_id', (109000000000000000000 + b.n)::text,
                          'email', b.email, 'name', b.full_name, 'full_name', b.full_name,
                          'picture', 'https://lh3.googleusercontent.test/a/' || b.n,
                          'avatar_url', 'https://lh3.googleusercontent.test/a/' || b.n,
                          'email_verified', true, 'phone_verified', false),
       b.created + interval '2 days', b.created + interval '1 day', b.created + interval '2 days'
FROM seed_bulk b WHERE b.google;

INSERT INTO auth.sessions (id, user_id, created_at, updated_at, factor_id, aal, not_after,
                           refreshed_at, user_agent, ip)
SELECT md5('supamove-session:' || u.id)::uuid, u.id, u.created_at + interval '3 days',
       u.created_at + interval '3 days 1 hour',
       CASE WHEN u.id = %(alice)s THEN md5('supamove-factor:alice')::uuid END,
       CASE WHEN u.id = %(alice)s THEN 'aal2' ELSE 'aal1' END::auth.aal_level, NULL,
       (u.created_at + interval '3 days 1 hour') AT TIME ZONE 'UTC',
       'Mozilla/5.0 (X11; Linux x86_64) FreshTrack/3.2',
       ('203.0.113.' || (1 + mod(hashtext(u.id::text) & 2147483647, 254)))::inet
FROM auth.users u
WHERE u.last_sign_in_at IS NOT NULL AND u.deleted_at IS NULL
  AND (u.email NOT LIKE 'user%%' OR right(split_part(u.email, '@', 1), 2) = '50'
       OR right(split_part(u.email, '@', 1), 2) = '00');

INSERT INTO auth.refresh_tokens (instance_id, id, token, user_id, revoked, created_at, updated_at,
                                 parent, session_id)
SELECT '00000000-0000-0000-0000-000000000000', row_number() OVER (ORDER BY s.created_at, s.id),
       substr(md5('supamove-refresh:' || s.id), 1, 12), s.user_id::text, false, s.created_at,
       s.updated_at, NULL, s.id
FROM auth.sessions s;

SELECT setval(pg_get_serial_sequence('auth.refresh_tokens', 'id'),
              greatest(1, (SELECT count(*) FROM auth.refresh_tokens)),
              (SELECT count(*) FROM auth.refresh_tokens) > 0);

INSERT INTO auth.mfa_factors (id, user_id, friendly_name, factor_type, status, created_at,
                              updated_at, secret)
VALUES (md5('supamove-factor:alice')::uuid, %(alice)s, 'Alice''s phone', 'totp', 'verified',
        %(epoch)s::timestamptz - interval '60 days', %(epoch)s::timestamptz - interval '60 days',
        'JBSWY3DPEHPK3PXP');

INSERT INTO auth.mfa_amr_claims (session_id, created_at, updated_at, authentication_method, id)
SELECT md5('supamove-session:' || %(alice)s)::uuid, %(epoch)s::timestamptz - interval '59 days',
       %(epoch)s::timestamptz - interval '59 days', m, md5('supamove-amr:' || m)::uuid
FROM unnest(ARRAY['password', 'totp']) m;

INSERT INTO auth.one_time_tokens (id, user_id, token_type, token_hash, relates_to, created_at,
                                  updated_at)
SELECT md5('supamove-ott:dana')::uuid, u.id, 'confirmation_token', u.confirmation_token, u.email,
       u.created_at AT TIME ZONE 'UTC', u.created_at AT TIME ZONE 'UTC'
FROM auth.users u WHERE u.id = %(dana)s;

INSERT INTO auth.flow_state (id, user_id, auth_code, code_challenge_method, code_challenge,
                             provider_type, created_at, updated_at, authentication_method,
                             auth_code_issued_at)
VALUES (md5('supamove-flow:kai')::uuid, %(kai)s, md5('supamove-code:kai')::uuid::text, 's256',
        'E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM', 'github',
        %(epoch)s::timestamptz - interval '10 days', %(epoch)s::timestamptz - interval '10 days',
        'oauth', %(epoch)s::timestamptz - interval '10 days');

INSERT INTO auth.audit_log_entries (instance_id, id, payload, created_at, ip_address)
SELECT '00000000-0000-0000-0000-000000000000', md5('supamove-audit:' || u.id)::uuid,
       json_build_object('action', 'user_signedup', 'actor_id', u.id,
                         'actor_username', coalesce(u.email, u.phone, ''),
                         'actor_via_sso', u.is_sso_user, 'log_type', 'team',
                         'traits', json_build_object('provider',
                                                      coalesce(u.raw_app_meta_data ->> 'provider', 'anonymous'))),
       u.created_at, '198.51.100.7'
FROM auth.users u;

INSERT INTO auth.sso_domains (id, sso_provider_id, domain, created_at, updated_at)
SELECT md5('supamove-sso-domain:acme')::uuid, id, 'acme-corp.test', created_at, updated_at
FROM auth.sso_providers;

INSERT INTO auth.saml_providers (id, sso_provider_id, entity_id, metadata_xml, attribute_mapping,
                                 created_at, updated_at, name_id_format)
SELECT md5('supamove-saml:acme')::uuid, id, 'https://idp.acme-corp.test/saml/metadata',
       '<EntityDescriptor xmlns="urn:oasis:names:tc:SAML:2.0:metadata" '
       'entityID="https://idp.acme-corp.test/saml/metadata"/>',
       '{"keys": {"email": {"name": "mail"}, "full_name": {"name": "displayName"}}}',
       created_at, updated_at, 'urn:oasis:names:tc:SAML:1.1:nameid-format:emailAddress'
FROM auth.sso_providers;

INSERT INTO auth.schema_migrations (version)
SELECT unnest(ARRAY['20171026211738', '20171026211808', '20171026211834', '20180103212743',
                    '20180108183307', '20180119214651', '20180125194653', '00', '20210710035447',
                    '20210722035447', '20210730183235', '20210909172000', '20210927181326',
                    '20211122151130', '20211124214934', '20211202183645', '20220114185221',
                    '20220114185340', '20220224000811', '20220323170000', '20220429102000',
                    '20220531120530', '20220614074223', '20220811173540', '20221003041349',
                    '20221003041400', '20221011041400', '20221020193600', '20221021073300',
                    '20221021082433', '20221027105023', '20221114143122', '20221114143410',
                    '20221125140132', '20221208132122', '20221215195500', '20221215195800',
                    '20221215195900', '20230116124310', '20230116124412', '20230131181311',
                    '20230322519590', '20230402418590', '20230411005111', '20230508135423',
                    '20230523124323', '20230818113222', '20230914180801', '20231027141322',
                    '20231114161723', '20231117164230', '20240115144230', '20240214120130',
                    '20240306115329', '20240314092811', '20240427152123', '20240612123726',
                    '20240729123726', '20240802193726', '20240806073726', '20241009103726']);

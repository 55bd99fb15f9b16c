-- The SSO provider (acme-corp) the SSO users sign in through.

INSERT INTO auth.sso_providers (id, resource_id, created_at, updated_at)
VALUES (%(sso)s, 'acme-corp', '2023-09-01 09:00:00+00', '2023-09-01 09:00:00+00');

-- One auth.mfa_factors row of a hand-written user.

INSERT INTO auth.mfa_factors (id, user_id, friendly_name, factor_type, status, created_at, updated_at,
                              secret, phone, web_authn_credential)
VALUES (%(id)s, %(user_id)s, %(friendly_name)s, %(factor_type)s::auth.factor_type,
        %(factor_status)s::auth.factor_status, %(created_at)s, %(updated_at)s, %(secret)s, %(phone)s,
        %(web_authn_credential)s);

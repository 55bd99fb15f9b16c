-- One auth.identities row of a hand-written user.

INSERT INTO auth.identities (id, user_id, provider, provider_id, identity_data, last_sign_in_at,
                             created_at, updated_at)
VALUES (%(id)s, %(user_id)s, %(provider)s, %(provider_id)s, %(identity_data)s, %(last_sign_in_at)s,
        %(created_at)s, %(updated_at)s);

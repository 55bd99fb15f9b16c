-- One hand-written auth user; the parameters are auth.users columns.

INSERT INTO auth.users (
    instance_id, id, aud, role, email, encrypted_password, email_confirmed_at, confirmation_token,
    confirmation_sent_at, recovery_token, email_change_token_new, email_change, last_sign_in_at,
    raw_app_meta_data, raw_user_meta_data, created_at, updated_at, phone, phone_confirmed_at,
    banned_until, is_sso_user, deleted_at, is_anonymous)
VALUES (
    '00000000-0000-0000-0000-000000000000', %(id)s, 'authenticated', 'authenticated', %(email)s,
    %(encrypted_password)s, %(email_confirmed_at)s, %(confirmation_token)s, %(confirmation_sent_at)s,
    '', '', '', %(last_sign_in_at)s, %(raw_app_meta_data)s, %(raw_user_meta_data)s, %(created_at)s,
    %(updated_at)s, %(phone)s, %(phone_confirmed_at)s, %(banned_until)s, %(is_sso_user)s,
    %(deleted_at)s, %(is_anonymous)s);

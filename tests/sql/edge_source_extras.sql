-- Source only, after edge_cases.sql: the foreign key from edge.user_refs into auth.users.
ALTER TABLE edge.user_refs ADD CONSTRAINT user_refs_user_id_fkey
    FOREIGN KEY (user_id) REFERENCES auth.users(id) ON DELETE CASCADE;

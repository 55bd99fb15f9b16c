-- (CREATE, DROP) statements of readings' primary key, unique constraints and indexes:
-- dropped before a big load, recreated after it.

SELECT format('ALTER TABLE public.readings ADD CONSTRAINT %I %s', c.conname, pg_get_constraintdef(c.oid)),
       format('ALTER TABLE public.readings DROP CONSTRAINT %I', c.conname)
FROM pg_constraint c
WHERE c.conrelid = 'public.readings'::regclass AND c.contype IN ('p', 'u')
UNION ALL
SELECT pg_get_indexdef(i.indexrelid), format('DROP INDEX %s', i.indexrelid::regclass)
FROM pg_index i
WHERE i.indrelid = 'public.readings'::regclass
  AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = i.indexrelid);

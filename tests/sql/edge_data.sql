-- Rows for schema `edge` (edge_cases.sql), source only, after create_source() (edge.user_refs
-- points at its seeded auth users) and edge_source_extras.sql. Every timestamptz literal
-- carries its offset, so the session time zone does not matter.

INSERT INTO edge.types_zoo VALUES
-- 1: ordinary values
(1, 12345678901234567890.12345678901234567890,
 3.14159265358979323846264338327950288419716939937510582097494459230781640628620899,
 0.1, 0.1, '2024-02-29 23:59:59.123456+00', '2024-02-29 12:00:00.000001', '2024-02-29',
 '23:59:59.999999', '12:34:56.789+05:30', '1 year 2 mons 3 days 04:05:06.789', '\x00ff10',
 '{1,2,3}', '{alpha,beta,gamma}',
 '{"a": 1, "b": [true, false, null]}', '{"a": 1, "b": [true, false, null]}',
 'happy', '{sad,happy}', 'ABC', 12.5, '(1.5,-2.25)', '192.168.1.10/24', '10.0.0.0/8',
 '08:00:2b:01:02:03', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', B'1011', 'a fat cat sat on a mat',
 '[1,10)', 'ab', 'ten chars!', true, 'plain text'),
-- 2: NaN, infinities, empties, duplicate JSON keys, the string 'NULL'
(2, -99999999999999999999.99999999999999999999, 'NaN', 'NaN', 'NaN', 'infinity', '-infinity',
 'infinity', '00:00:00', '00:00:00+00', '0 seconds', '\x', '{}', '{}',
 '{"a":1,"a":2}', '{"a":1,"a":2}', 'sad', '{}', 'ZZ', 0.001, '(0,0)', '0.0.0.0', '0.0.0.0/0',
 '00:00:00:00:00:00', '00000000-0000-0000-0000-000000000000', B'', '', 'empty', '', '', false,
 'NULL'),
-- 3: Infinity floats, 24:00, arrays with NULLs and characters that need quoting, odd JSON spacing
(3, 0.00000000000000000001, 1.5e-30, 'Infinity', '-Infinity', '-infinity', 'infinity',
 '-infinity', '24:00:00', '24:00:00-15:59', '-1 days +02:03:04.5', '\x5c30',
 '{1,NULL,3}',
 ARRAY['has "quotes"', 'comma,inside', 'back\slash', NULL, 'NULL', '', ' spaced ', '{braces}',
       E'new\nline'],
 '  { "spaced" :  [1, 2 ,3 ] ,"nested":{"k":"v"}}  ', '  { "spaced" :  [1, 2 ,3 ] ,"nested":{"k":"v"}}  ',
 'Ünïcödé', '{"Ünïcödé",NULL,"very happy"}', 'HELLO', 999999999.999, '(-1e+300,1e-300)',
 '::ffff:1.2.3.4', '2001:db8::/32', 'ff:ff:ff:ff:ff:ff', 'FFFFFFFF-FFFF-FFFF-FFFF-FFFFFFFFFFFF',
 B'1111111111111111111111111111111111111111111111111111111111111111', 'fat:2A cat:3B,5C rat:1',
 'empty', 'abcde', 'ünïcödé!!!', NULL, NULL),
-- 4: negative zero, BC date, year 1, 2-D array, non-default lower bound, JSON null vs SQL NULL
(4, -0.5, '-0', '-0', '-0', '1999-12-31 23:59:59.999999-08', '0001-01-01 00:00:00',
 '0044-03-15 BC', '00:00:00.000001', '23:59:59.999999+14', '-178000000 years',
 (SELECT decode(string_agg(lpad(to_hex(i), 2, '0'), '' ORDER BY i), 'hex') FROM generate_series(0, 255) i),
 '[0:2]={7,8,9}', '{{a,b},{c,NULL}}', '"just a string"', 'null', NULL, '{}', NULL, 0.5, '(-0,0)',
 '2001:db8::1', '192.168.100.128/25', '08-00-2b-01-02-03', '123e4567-e89b-12d3-a456-426614174000',
 B'0', 'quote''s & ampersand', '(,5]', 'a', 'x', true, ''),
-- 5: extremes; text with emoji, combining marks, tabs, newlines, CR
(5, 99999999999999999999.99999999999999999999, 1e-100, 1.7976931348623157e308, 3.4028235e38,
 '294276-12-31 23:59:59.999999+00', '4713-01-01 00:00:00 BC', '5874897-12-31', NULL, NULL,
 '178000000 years', NULL, ARRAY[-2147483648, 2147483647], NULL, NULL, NULL, 'very happy', NULL,
 NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
 E'🧊❄️ fridge 👩‍🔬 e\u0301 vs \u00e9\ttab\nnewline\r\ncrlf\rcr end'),
-- 6: quotes and backslashes
(6, NULL, NULL, 5e-324, 1.4e-45, NULL, NULL, NULL, NULL, NULL, NULL, '\x27225c', NULL, NULL,
 '{"sql": "''); DROP TABLE x; --"}', '{"sql": "''); DROP TABLE x; --"}', NULL, NULL, 'SQL', NULL,
 NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
 E'quote\' double" backslash\\ end \\\\ two'),
-- 7: a value that looks like SQL
(7, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
 NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
 '''); DROP TABLE x; --'),
-- 8: a value that looks like JSON
(8, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
 NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
 '{"looks": "like json", "n": [1, 2]}'),
-- 9: SQL NULL everywhere
(9, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
 NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL),
-- 10: BOM, right-to-left, outside the BMP, zero-width joiner; JSON escapes kept byte-exact
(10, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
 ARRAY[E'\uFEFFbom', 'مرحبا', '𝔘𝔫𝔦𝔠𝔬𝔡𝔢'],
 '{"u":"\u00e9","esc":"\"q\"","ctrl":"\t","slash":"\/"}', '{"u":"\u00e9","esc":"\"q\"","ctrl":"\t"}',
 NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
 E'\uFEFFbom start, RTL مرحبا, 𝔘𝔫𝔦𝔠𝔬𝔡𝔢, family 👨\u200D👩\u200D👧'),
-- 11: COPY's own markers as data: \N and \.
(11, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, '\x5c4e', NULL,
 ARRAY[E'\\N', E'\\.', 'N'], NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
 NULL, NULL, NULL, NULL, NULL,
 E'\\N');

-- The integer types' extremes and zero, the rows above leaving them NULL (row 9's stay so)
UPDATE edge.types_zoo SET i2 = v.i2, i8 = v.i8
FROM (VALUES (1, 1::smallint, 42::bigint), (2, 0, 0), (4, -32768, -9223372036854775808),
             (5, 32767, 9223372036854775807), (6, -1, NULL), (7, NULL, -1)) v (id, i2, i8)
WHERE types_zoo.id = v.id;

-- Children listed before their parents, children with smaller ids, a self-loop, a chain.
INSERT INTO edge.tree (id, parent_id, label) VALUES
    (1, 2, 'grandchild (id smaller than its parent)'),
    (2, 10, 'child of 10'),
    (15, 20, 'leaf'),
    (20, 10, 'second child'),
    (10, NULL, 'root'),
    (3, 3, 'its own parent');
INSERT INTO edge.tree (id, parent_id, label)
SELECT g, CASE WHEN g < 150 THEN g + 1 END, 'chain ' || g FROM generate_series(100, 150) g;

-- The cycle: a1 <-> b1, a3 <-> b2; a2 has no b; b3 points at a1.
INSERT INTO edge.cycle_a (id, b_id, note) VALUES (1, NULL, 'a1'), (2, NULL, 'a2 without b'), (3, NULL, 'a3');
INSERT INTO edge.cycle_b (id, a_id, note) VALUES (1, 1, 'b1 -> a1'), (2, 3, 'b2 -> a3'), (3, 1, 'b3 -> a1');
UPDATE edge.cycle_a SET b_id = 1 WHERE id = 1;
UPDATE edge.cycle_a SET b_id = 2 WHERE id = 3;

INSERT INTO edge.events (happened_at, kind, payload) VALUES
    ('2024-01-15 10:00:00+00', 'door_open', '{"unit": 1}'),
    ('2024-01-31 23:59:59.999999+00', 'last_microsecond_of_january', NULL),
    ('2024-02-01 00:00:00+00', 'start_of_february', '{}'),
    ('2024-02-29 12:00:00+00', 'leap_day', '{"leap": true}'),
    ('2024-03-01 00:00:00+00', 'into_default', '[]'),
    ('2023-12-31 23:59:59+00', 'before_range', 'null'),
    ('infinity', 'far_future', NULL);

INSERT INTO edge.no_pk (a, b, c) VALUES
    (1, 'dup', '{"x": 1}'), (1, 'dup', '{"x": 1}'), (1, 'dup', '{"x": 1}'),
    (2, NULL, NULL), (2, NULL, NULL),
    (NULL, NULL, NULL), (NULL, NULL, NULL),
    (3, '', '[]');

INSERT INTO edge."Odd Table" ("select", "Mixed Case", "has space", "quote""d") VALUES
    (1, 'Mixed', 'has space', 'quote"d value'),
    (2, NULL, E'tab\there', ''''),
    (3, 'SELECT * FROM "Odd Table"', ' ', '"');

-- Rows as they were before the triggers existed: a copy that fires them changes `note`
-- to 'changed by trigger' and adds rows to edge.guarded_audit.
ALTER TABLE edge.guarded DISABLE TRIGGER USER;
INSERT INTO edge.guarded (id, note, inserted_by) VALUES
    (1, 'original note', 'seed'),
    (2, 'another original', 'seed'),
    (3, 'changed by trigger?', 'seed');
ALTER TABLE edge.guarded ENABLE TRIGGER USER;
INSERT INTO edge.guarded_audit (guarded_id, action) VALUES (1, 'SEED'), (2, 'SEED');
INSERT INTO edge.guarded (id, note, inserted_by) VALUES (4, 'replaced by the trigger', 'app');

-- Identity state differs from max(id): always_id sequence at 130, an explicit 5000.
INSERT INTO edge.ids (qty, price, note) VALUES (1, 9.99, 'first'), (2, 0.01, 'second'), (3, 100.00, 'third');
INSERT INTO edge.ids (always_id, default_id, qty, price, note) OVERRIDING SYSTEM VALUE
    VALUES (5000, 500, 7, 1.50, 'explicit ids');
INSERT INTO edge.ids (default_id, serial_id, qty, price, note) VALUES (42, 42, 0, 0.00, 'explicit default and serial');
DELETE FROM edge.ids WHERE note = 'second';

INSERT INTO edge.user_refs (id, user_id, watcher_ids, note) VALUES
    (1, (SELECT id FROM auth.users WHERE email = 'alice@freshtrack.test'),
     -- bounds other than 1 and a second dimension: kept by the import, read whole by verify
     ('[0:1]=' || ARRAY(SELECT id FROM auth.users WHERE email IN ('bob@freshtrack.test', 'erin@freshtrack.test')
                        ORDER BY email)::text)::uuid[],
     'alice, watched by bob and erin'),
    (2, (SELECT id FROM auth.users WHERE is_anonymous ORDER BY id LIMIT 1), '{}', 'anonymous user, no watchers'),
    (3, NULL, ARRAY[ARRAY[(SELECT id FROM auth.users WHERE email = 'deleted.user@freshtrack.test')]],
     'a soft-deleted watcher'),
    (4, (SELECT id FROM auth.users WHERE email = 'Judy.Case@freshtrack.test'),
     ARRAY[(SELECT id FROM auth.users WHERE email = 'judy.case@freshtrack.test'), NULL],
     'SSO duplicate email; array with a NULL');

-- Posts by users that have profiles; numbers from the free-standing sequence, then moved on past them.
INSERT INTO edge.posts (id, author_id, editor, meta)
SELECT p.n, p.id, CASE WHEN p.n % 2 = 0 THEN p.id::text END,
       jsonb_build_object('owner', p.id, 'review', jsonb_build_object('by', p.id, 'note', 'ok'), 'title', 'post ' || p.n)
FROM (SELECT id, row_number() OVER (ORDER BY id)::int AS n FROM public.profiles ORDER BY id LIMIT 6) p;
INSERT INTO edge.posts (id, author_id, editor, meta) VALUES (7, NULL, NULL, '{"title": "anonymous"}');
SELECT setval('edge.post_number_seq', 6000);
SELECT setval('edge.ticket_seq', 42);

-- Readings number first..last (id = number + 1). Sensor k = mod(g, ns) reports every 5 minutes;
-- temperature follows a daily sine around the unit type's midpoint, with hash noise and rare
-- door-left-open excursions.

WITH s AS MATERIALIZED (
    SELECT substr(se.serial_number, 3, 6)::int AS k, se.id, se.firmware_version AS fw,
           ((u.temp_min + u.temp_max) / 2)::float8 AS mid,
           ((u.temp_max - u.temp_min) / 4)::float8 AS amp
    FROM public.sensors se JOIN public.units u ON u.id = se.unit_id
)
INSERT INTO public.readings (id, sensor_id, recorded_at, temperature, humidity, battery, door_open, raw)
OVERRIDING SYSTEM VALUE
SELECT r.g + 1, s.id,
       %(epoch)s::timestamptz + make_interval(secs => r.step * 300 + mod(r.k, 300)),
       round((s.mid + s.amp * sin(r.step * 0.02181661564992912 + r.k)
              + ((r.h & 1023)::float8 / 1023 - 0.5) * 0.8
              + CASE WHEN ((r.h >> 10) & 1023) = 0 THEN 9.5 ELSE 0 END) * 100) / 100,
       CASE WHEN mod(r.k, 2) = 1 THEN (round(450 + 300 * ((r.h >> 20) & 1023)::float8 / 1023) / 10)::real END,
       greatest(5, 100 - r.step / 150)::smallint,
       CASE WHEN mod(r.k, 2) = 0 THEN ((r.h >> 30) & 63) = 0 END,
       CASE WHEN mod(r.g, 10) = 0 THEN jsonb_build_object(
           'rssi', -45 - ((r.h >> 36) & 63), 'snr', ((r.h >> 42) & 127)::float8 / 10, 'fw', s.fw,
           'gw', 'gw-' || lpad(mod(r.k, 16)::text, 2, '0'), 'seq', r.step) END
FROM (SELECT g, mod(g, %(ns)s) AS k, g / %(ns)s AS step, hashint8extended(g, 20240101) AS h
      FROM generate_series(%(first)s::bigint, %(last)s::bigint) g) r
JOIN s ON s.k = r.k;

-- FreshTrack Pro's application schema (temperature monitoring for food service):
-- organizations own sites, sites hold units (fridges, freezers), units carry sensors,
-- sensors send readings, out-of-range readings raise alerts.
--
-- Created identically on the source (after supabase_platform.sql) and on the target,
-- which has no auth schema: nothing here may reference auth. The foreign keys to
-- auth.users, the RLS policies (they call auth.uid()) and Supabase's GRANTs are in
-- freshtrack_source_extras.sql, applied on the source only.

CREATE TYPE public.org_role AS ENUM ('owner', 'admin', 'manager', 'staff', 'viewer');
CREATE TYPE public.unit_type AS ENUM (
    'fridge', 'freezer', 'walk_in_cooler', 'walk_in_freezer', 'blast_chiller', 'display_case'
);
CREATE TYPE public.alert_severity AS ENUM ('info', 'warning', 'critical');
CREATE TYPE public.alert_status AS ENUM ('open', 'acknowledged', 'resolved');

-- Application trigger: keeps updated_at current on UPDATE.
CREATE FUNCTION public.set_updated_at() RETURNS trigger
    LANGUAGE plpgsql
AS $$
BEGIN
    NEW.updated_at := now();
    RETURN NEW;
END;
$$;

CREATE TABLE public.organizations (
    id uuid DEFAULT gen_random_uuid() NOT NULL,
    name text NOT NULL,
    slug text NOT NULL,
    plan text DEFAULT 'starter' NOT NULL,
    settings jsonb DEFAULT '{}'::jsonb NOT NULL,
    created_at timestamp with time zone DEFAULT now() NOT NULL,
    updated_at timestamp with time zone DEFAULT now() NOT NULL,
    CONSTRAINT organizations_pkey PRIMARY KEY (id),
    CONSTRAINT organizations_slug_key UNIQUE (slug),
    CONSTRAINT organizations_plan_check CHECK (plan IN ('starter', 'pro', 'enterprise'))
);
COMMENT ON TABLE public.organizations IS 'A FreshTrack customer (restaurant group, grocer, clinic).';

-- One row per Supabase Auth user: id is auth.users.id (foreign key on the source only).
CREATE TABLE public.profiles (
    id uuid NOT NULL,
    organization_id uuid,
    full_name text,
    role text DEFAULT 'staff' NOT NULL,
    phone text,
    avatar_url text,
    timezone text DEFAULT 'UTC' NOT NULL,
    created_at timestamp with time zone DEFAULT now() NOT NULL,
    CONSTRAINT profiles_pkey PRIMARY KEY (id),
    CONSTRAINT profiles_organization_id_fkey FOREIGN KEY (organization_id)
        REFERENCES public.organizations(id) ON DELETE SET NULL,
    CONSTRAINT profiles_role_check CHECK (role IN ('owner', 'admin', 'manager', 'staff', 'viewer'))
);
CREATE INDEX profiles_organization_id_idx ON public.profiles USING btree (organization_id);

CREATE TABLE public.org_members (
    organization_id uuid NOT NULL,
    user_id uuid NOT NULL,
    role public.org_role DEFAULT 'staff' NOT NULL,
    created_at timestamp with time zone DEFAULT now() NOT NULL,
    CONSTRAINT org_members_pkey PRIMARY KEY (organization_id, user_id),
    CONSTRAINT org_members_organization_id_fkey FOREIGN KEY (organization_id)
        REFERENCES public.organizations(id) ON DELETE CASCADE
);
CREATE INDEX org_members_user_id_idx ON public.org_members USING btree (user_id);

CREATE TABLE public.sites (
    id uuid DEFAULT gen_random_uuid() NOT NULL,
    organization_id uuid NOT NULL,
    name text NOT NULL,
    address text,
    timezone text DEFAULT 'UTC' NOT NULL,
    latitude numeric(9,6),
    longitude numeric(9,6),
    created_at timestamp with time zone DEFAULT now() NOT NULL,
    updated_at timestamp with time zone DEFAULT now() NOT NULL,
    CONSTRAINT sites_pkey PRIMARY KEY (id),
    CONSTRAINT sites_organization_id_name_key UNIQUE (organization_id, name),
    CONSTRAINT sites_organization_id_fkey FOREIGN KEY (organization_id)
        REFERENCES public.organizations(id) ON DELETE CASCADE
);

CREATE TABLE public.units (
    id uuid DEFAULT gen_random_uuid() NOT NULL,
    site_id uuid NOT NULL,
    name text NOT NULL,
    unit_type public.unit_type NOT NULL,
    temp_min numeric(6,2) NOT NULL,
    temp_max numeric(6,2) NOT NULL,
    is_active boolean DEFAULT true NOT NULL,
    created_at timestamp with time zone DEFAULT now() NOT NULL,
    updated_at timestamp with time zone DEFAULT now() NOT NULL,
    CONSTRAINT units_pkey PRIMARY KEY (id),
    CONSTRAINT units_site_id_fkey FOREIGN KEY (site_id) REFERENCES public.sites(id) ON DELETE CASCADE,
    CONSTRAINT units_temp_range_check CHECK (temp_min < temp_max)
);
CREATE INDEX units_site_id_idx ON public.units USING btree (site_id);
COMMENT ON COLUMN public.units.temp_min IS 'Lowest safe temperature, degrees Celsius.';
COMMENT ON COLUMN public.units.temp_max IS 'Highest safe temperature, degrees Celsius.';

CREATE TABLE public.sensors (
    id uuid DEFAULT gen_random_uuid() NOT NULL,
    unit_id uuid NOT NULL,
    serial_number text NOT NULL,
    model text NOT NULL,
    firmware_version text,
    installed_at timestamp with time zone NOT NULL,
    last_seen_at timestamp with time zone,
    battery_level smallint,
    created_at timestamp with time zone DEFAULT now() NOT NULL,
    CONSTRAINT sensors_pkey PRIMARY KEY (id),
    CONSTRAINT sensors_serial_number_key UNIQUE (serial_number),
    CONSTRAINT sensors_unit_id_fkey FOREIGN KEY (unit_id) REFERENCES public.units(id) ON DELETE CASCADE,
    CONSTRAINT sensors_battery_level_check CHECK (battery_level BETWEEN 0 AND 100)
);
CREATE INDEX sensors_unit_id_idx ON public.sensors USING btree (unit_id);

CREATE TABLE public.readings (
    id bigint GENERATED ALWAYS AS IDENTITY,
    sensor_id uuid NOT NULL,
    recorded_at timestamp with time zone NOT NULL,
    temperature double precision NOT NULL,
    humidity real,
    battery smallint,
    door_open boolean,
    raw jsonb,
    CONSTRAINT readings_pkey PRIMARY KEY (id),
    CONSTRAINT readings_sensor_id_fkey FOREIGN KEY (sensor_id) REFERENCES public.sensors(id) ON DELETE CASCADE
);
CREATE INDEX readings_sensor_id_recorded_at_idx ON public.readings USING btree (sensor_id, recorded_at DESC);
COMMENT ON TABLE public.readings IS 'One row per sensor report, every five minutes.';

CREATE TABLE public.alerts (
    id bigserial NOT NULL,
    unit_id uuid NOT NULL,
    sensor_id uuid,
    severity public.alert_severity NOT NULL,
    status public.alert_status DEFAULT 'open' NOT NULL,
    message text NOT NULL,
    temperature double precision,
    acknowledged_by uuid,
    acknowledged_at timestamp with time zone,
    resolved_at timestamp with time zone,
    created_at timestamp with time zone DEFAULT now() NOT NULL,
    CONSTRAINT alerts_pkey PRIMARY KEY (id),
    CONSTRAINT alerts_unit_id_fkey FOREIGN KEY (unit_id) REFERENCES public.units(id) ON DELETE CASCADE,
    CONSTRAINT alerts_sensor_id_fkey FOREIGN KEY (sensor_id) REFERENCES public.sensors(id) ON DELETE SET NULL,
    CONSTRAINT alerts_ack_check CHECK (acknowledged_by IS NULL OR acknowledged_at IS NOT NULL)
);
CREATE INDEX alerts_unit_id_created_at_idx ON public.alerts USING btree (unit_id, created_at DESC);
CREATE INDEX alerts_open_idx ON public.alerts USING btree (unit_id) WHERE (status = 'open');
COMMENT ON COLUMN public.alerts.acknowledged_by IS 'The Supabase Auth user who acknowledged the alert.';

CREATE TABLE public.alert_subscriptions (
    id uuid DEFAULT gen_random_uuid() NOT NULL,
    organization_id uuid NOT NULL,
    unit_id uuid,
    min_severity public.alert_severity DEFAULT 'warning' NOT NULL,
    channels text[] DEFAULT '{email}'::text[] NOT NULL,
    notify_user_ids uuid[] DEFAULT '{}'::uuid[] NOT NULL,
    created_at timestamp with time zone DEFAULT now() NOT NULL,
    updated_at timestamp with time zone DEFAULT now() NOT NULL,
    CONSTRAINT alert_subscriptions_pkey PRIMARY KEY (id),
    CONSTRAINT alert_subscriptions_organization_id_fkey FOREIGN KEY (organization_id)
        REFERENCES public.organizations(id) ON DELETE CASCADE,
    CONSTRAINT alert_subscriptions_unit_id_fkey FOREIGN KEY (unit_id)
        REFERENCES public.units(id) ON DELETE CASCADE
);
CREATE INDEX alert_subscriptions_notify_user_ids_idx ON public.alert_subscriptions USING gin (notify_user_ids);
COMMENT ON COLUMN public.alert_subscriptions.notify_user_ids IS
    'Supabase Auth user ids to notify (no foreign key: an array).';

CREATE TRIGGER organizations_set_updated_at BEFORE UPDATE ON public.organizations
    FOR EACH ROW EXECUTE FUNCTION public.set_updated_at();
CREATE TRIGGER sites_set_updated_at BEFORE UPDATE ON public.sites
    FOR EACH ROW EXECUTE FUNCTION public.set_updated_at();
CREATE TRIGGER units_set_updated_at BEFORE UPDATE ON public.units
    FOR EACH ROW EXECUTE FUNCTION public.set_updated_at();
CREATE TRIGGER alert_subscriptions_set_updated_at BEFORE UPDATE ON public.alert_subscriptions
    FOR EACH ROW EXECUTE FUNCTION public.set_updated_at();

ALTER TABLE public.organizations ENABLE ROW LEVEL SECURITY;
ALTER TABLE public.profiles ENABLE ROW LEVEL SECURITY;
ALTER TABLE public.org_members ENABLE ROW LEVEL SECURITY;
ALTER TABLE public.sites ENABLE ROW LEVEL SECURITY;
ALTER TABLE public.units ENABLE ROW LEVEL SECURITY;
ALTER TABLE public.sensors ENABLE ROW LEVEL SECURITY;
ALTER TABLE public.readings ENABLE ROW LEVEL SECURITY;
ALTER TABLE public.alerts ENABLE ROW LEVEL SECURITY;
ALTER TABLE public.alert_subscriptions ENABLE ROW LEVEL SECURITY;

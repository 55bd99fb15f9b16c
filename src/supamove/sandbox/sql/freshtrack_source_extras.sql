-- The parts of FreshTrack's schema that only exist on Supabase, applied on the source
-- after supabase_platform.sql and freshtrack_app.sql: foreign keys into auth.users,
-- row-level security policies that call auth.uid(), the GRANTs Supabase gives its API
-- roles, and the Realtime publication of alerts.

ALTER TABLE public.profiles
    ADD CONSTRAINT profiles_id_fkey FOREIGN KEY (id) REFERENCES auth.users(id) ON DELETE CASCADE;
ALTER TABLE public.org_members
    ADD CONSTRAINT org_members_user_id_fkey FOREIGN KEY (user_id) REFERENCES auth.users(id) ON DELETE CASCADE;
ALTER TABLE public.alerts
    ADD CONSTRAINT alerts_acknowledged_by_fkey FOREIGN KEY (acknowledged_by)
        REFERENCES auth.users(id) ON DELETE SET NULL;

-- Row-level security: a user sees the organizations they are a member of.
CREATE POLICY "Members read their memberships" ON public.org_members
    FOR SELECT TO authenticated
    USING (user_id = (SELECT auth.uid()));

CREATE POLICY "Members read their organizations" ON public.organizations
    FOR SELECT TO authenticated
    USING (id IN (SELECT m.organization_id FROM public.org_members m WHERE m.user_id = (SELECT auth.uid())));

CREATE POLICY "Owners update their organization" ON public.organizations
    FOR UPDATE TO authenticated
    USING (id IN (SELECT m.organization_id FROM public.org_members m
                  WHERE m.user_id = (SELECT auth.uid()) AND m.role IN ('owner', 'admin')))
    WITH CHECK (id IN (SELECT m.organization_id FROM public.org_members m
                       WHERE m.user_id = (SELECT auth.uid()) AND m.role IN ('owner', 'admin')));

CREATE POLICY "Users read profiles in their organizations" ON public.profiles
    FOR SELECT TO authenticated
    USING (id = (SELECT auth.uid())
           OR organization_id IN (SELECT m.organization_id FROM public.org_members m
                                  WHERE m.user_id = (SELECT auth.uid())));

CREATE POLICY "Users update their own profile" ON public.profiles
    FOR UPDATE TO authenticated
    USING (id = (SELECT auth.uid()))
    WITH CHECK (id = (SELECT auth.uid()));

CREATE POLICY "Members read sites" ON public.sites
    FOR SELECT TO authenticated
    USING (organization_id IN (SELECT m.organization_id FROM public.org_members m
                               WHERE m.user_id = (SELECT auth.uid())));

CREATE POLICY "Managers manage sites" ON public.sites
    FOR ALL TO authenticated
    USING (organization_id IN (SELECT m.organization_id FROM public.org_members m
                               WHERE m.user_id = (SELECT auth.uid())
                                 AND m.role IN ('owner', 'admin', 'manager')));

CREATE POLICY "Members read units" ON public.units
    FOR SELECT TO authenticated
    USING (site_id IN (SELECT s.id FROM public.sites s
                       JOIN public.org_members m ON m.organization_id = s.organization_id
                       WHERE m.user_id = (SELECT auth.uid())));

CREATE POLICY "Members read sensors" ON public.sensors
    FOR SELECT TO authenticated
    USING (unit_id IN (SELECT u.id FROM public.units u
                       JOIN public.sites s ON s.id = u.site_id
                       JOIN public.org_members m ON m.organization_id = s.organization_id
                       WHERE m.user_id = (SELECT auth.uid())));

CREATE POLICY "Members read readings" ON public.readings
    FOR SELECT TO authenticated
    USING (sensor_id IN (SELECT se.id FROM public.sensors se
                         JOIN public.units u ON u.id = se.unit_id
                         JOIN public.sites s ON s.id = u.site_id
                         JOIN public.org_members m ON m.organization_id = s.organization_id
                         WHERE m.user_id = (SELECT auth.uid())));

CREATE POLICY "Members read alerts" ON public.alerts
    FOR SELECT TO authenticated
    USING (unit_id IN (SELECT u.id FROM public.units u
                       JOIN public.sites s ON s.id = u.site_id
                       JOIN public.org_members m ON m.organization_id = s.organization_id
                       WHERE m.user_id = (SELECT auth.uid())));

CREATE POLICY "Members acknowledge alerts" ON public.alerts
    FOR UPDATE TO authenticated
    USING (unit_id IN (SELECT u.id FROM public.units u
                       JOIN public.sites s ON s.id = u.site_id
                       JOIN public.org_members m ON m.organization_id = s.organization_id
                       WHERE m.user_id = (SELECT auth.uid())))
    WITH CHECK (acknowledged_by IS NULL OR acknowledged_by = (SELECT auth.uid()));

CREATE POLICY "Subscribers read their subscriptions" ON public.alert_subscriptions
    FOR SELECT TO authenticated
    USING ((SELECT auth.uid()) = ANY (notify_user_ids)
           OR organization_id IN (SELECT m.organization_id FROM public.org_members m
                                  WHERE m.user_id = (SELECT auth.uid())));

-- Supabase's default privileges for its API roles; RLS does the filtering.
GRANT USAGE ON SCHEMA public TO anon, authenticated, service_role;
GRANT ALL ON ALL TABLES IN SCHEMA public TO anon, authenticated, service_role;
GRANT ALL ON ALL SEQUENCES IN SCHEMA public TO anon, authenticated, service_role;
GRANT ALL ON ALL FUNCTIONS IN SCHEMA public TO anon, authenticated, service_role;

-- Live alert updates in the dashboard.
ALTER PUBLICATION supabase_realtime ADD TABLE public.alerts;

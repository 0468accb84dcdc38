-- Drop the extension only if this role owns it, i.e. this migration (run by this role) created
-- it. An extension provisioned by a DBA as another role is theirs to remove; other databases
-- objects may depend on it.
do $$
begin
    if exists (
        select 1
        from pg_extension e
        join pg_roles r on r.oid = e.extowner
        where e.extname = 'vector' and r.rolname = current_user
    ) then
        drop extension vector;
    end if;
end
$$;

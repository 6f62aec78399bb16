-- drt writes into an existing table; the same column types cohortflow's destination creates.
create table public.high_value_drt (
    user_id text primary key,
    email text,
    score double precision,
    segment text,
    updated_at timestamp
);

-- Intent: computed_properties() gives, for every kind, exactly the hand-worked values (rows in one
-- relation and not the other are returned; NULLs compare equal under except).
(
    select * from {{ ref('properties_every_kind') }}
    except
    select * from {{ ref('properties_every_kind_expected') }}
)
union all
(
    select * from {{ ref('properties_every_kind_expected') }}
    except
    select * from {{ ref('properties_every_kind') }}
)

"""Store access, one module per aggregate; every tenant query filters by org_id."""

//! Access control: `server.token` (bearer token for the API and metrics)
//! and `server.basic_auth` (for the pages); badges, `/healthz` and
//! `/readyz` stay public.

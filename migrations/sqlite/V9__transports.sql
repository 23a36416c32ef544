-- A second relay and an HTTP transport per tenant (API.md §12), in step with migrations/postgres/V9__transports.sql.

-- The fallback relay: all NULL without one. Its password is sealed like smtp_password, bound
-- to the tenant (as its fallback), host, port and user.
ALTER TABLE tenants ADD COLUMN fallback_host TEXT;
ALTER TABLE tenants ADD COLUMN fallback_port INTEGER;
ALTER TABLE tenants ADD COLUMN fallback_username TEXT;
ALTER TABLE tenants ADD COLUMN fallback_password BLOB;
ALTER TABLE tenants ADD COLUMN fallback_from TEXT;
ALTER TABLE tenants ADD COLUMN fallback_tls TEXT;
ALTER TABLE tenants ADD COLUMN fallback_max_connections INTEGER;

-- The tenant's HTTP transport (API.md §12.2): all NULL without one. http_use is `primary`
-- or `fallback`; the signing secret is sealed with the data key, bound to the tenant.
ALTER TABLE tenants ADD COLUMN http_url TEXT;
ALTER TABLE tenants ADD COLUMN http_use TEXT;
ALTER TABLE tenants ADD COLUMN http_secret BLOB;

-- A locale's text message (API.md §12.3); NULL: the built-in one of its language.
ALTER TABLE templates ADD COLUMN sms TEXT;

-- Which transport accepted a code's last message: smtp, smtp_fallback or http.
ALTER TABLE challenges ADD COLUMN delivery_transport TEXT;

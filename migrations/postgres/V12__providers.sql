-- The providers tenants really use (API.md §15), in step with migrations/sqlite/V12__providers.sql.

-- SMTP with OAuth2 (§15.1): the relay's OAuth2 settings as JSON (provider, token_url,
-- client_id, scope, entra_tenant, refresh_token: whether one is stored); NULL: a password
-- login. With OAuth2 the relay's password column holds its sealed OAuth2 secrets.
ALTER TABLE tenants ADD COLUMN smtp_oauth2 TEXT;
ALTER TABLE tenants ADD COLUMN fallback_oauth2 TEXT;

-- One provider per channel (§15.2): kind, use and the settings that are not secret as JSON;
-- the secrets sealed with the data key, bound to the tenant, the channel and the kind.
-- NULL: none. A tenant without a relay keeps smtp_host = '' (§15.3).
ALTER TABLE tenants ADD COLUMN email_provider TEXT;
ALTER TABLE tenants ADD COLUMN email_provider_secrets BYTEA;
ALTER TABLE tenants ADD COLUMN sms_provider TEXT;
ALTER TABLE tenants ADD COLUMN sms_provider_secrets BYTEA;

-- A code's delivery record (§15.2): the provider's id of the accepted message, and the
-- provider's own error code (or oauth2_invalid_grant) of the last failure.
ALTER TABLE challenges ADD COLUMN provider_message_id TEXT;
ALTER TABLE challenges ADD COLUMN delivery_detail_code TEXT;

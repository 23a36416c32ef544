-- A message's code counts one `bounced` and one `complained` at most, whatever order its
-- events come in (API.md §16.2): which it counted is recorded as a provider event
-- (`counted-bounced` or `counted-complained`, the message's id), purged with the events 30
-- days after it was recorded. Before that release the first event of a message marked its
-- code and a later bounce counted nothing: each code marked then is recorded here, now, as
-- having counted its `bounced`, so a bounce after the upgrade does not count it again. (A code
-- a complaint marked first cannot be told apart: its later bounce stays uncounted, as it was,
-- and a second complaint is counted, as it was.) In step with the other backend's V24.
INSERT INTO provider_events (tenant_id, provider, event_id, received_at)
SELECT tenant_id, 'counted-bounced', provider_message_id, (EXTRACT(EPOCH FROM now()) * 1000)::BIGINT FROM challenges
WHERE delivery_status = 'bounced' AND provider_message_id IS NOT NULL
ON CONFLICT DO NOTHING;

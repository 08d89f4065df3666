-- The table of the pageviews example's sink. `id` is the message id
-- (`{view_id}.0`: what enrich emitted for that view), the primary key that
-- makes each view one row; `written_at` is when its batch was written.
CREATE TABLE IF NOT EXISTS pageviews (
  id text PRIMARY KEY,
  url text NOT NULL,
  browser text NOT NULL,
  os text NOT NULL,
  device text NOT NULL,
  minute timestamptz NOT NULL,
  load_ms integer CHECK (load_ms >= 0),
  doc jsonb NOT NULL,
  written_at timestamptz NOT NULL DEFAULT clock_timestamp()
);

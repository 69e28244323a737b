-- name: lock_agent_role
-- Serializes writers of the versions of one role (two PUTs, or ten workers loading one file at
-- start), so each new version is one more than the latest it saw; transaction-scoped.
SELECT pg_advisory_xact_lock(hashtext('conveyor-agent-definition'), hashtext($1));

-- name: latest_agent_definition
SELECT role, version, definition, digest, source, created_at
FROM agent_definitions
WHERE role = $1
ORDER BY version DESC
LIMIT 1;

-- name: latest_agent_definition_from
-- The latest version of a role that came from one source (a file, or the API).
SELECT role, version, definition, digest, source, created_at
FROM agent_definitions
WHERE role = $1 AND source = $2
ORDER BY version DESC
LIMIT 1;

-- name: insert_agent_definition
INSERT INTO agent_definitions (role, version, definition, digest, source)
VALUES ($1, $2, $3, $4, $5)
RETURNING role, version, definition, digest, source, created_at;

-- name: latest_agent_definitions
-- The latest version of every role (or of those in $1 when it is not NULL), by role: what
-- workers poll for the roles they serve and what the API checks submissions against.
SELECT DISTINCT ON (role) role, version, definition, digest, source, created_at
FROM agent_definitions
WHERE $1::text[] IS NULL OR role = ANY ($1)
ORDER BY role, version DESC;

-- name: latest_agent_versions
-- Only the number of the latest version of every role (or of those in $1): what workers
-- and API processes poll, reading a whole definition only when its number moved.
SELECT role, max(version) AS version
FROM agent_definitions
WHERE $1::text[] IS NULL OR role = ANY ($1)
GROUP BY role
ORDER BY role;

-- name: agent_definition_version
SELECT role, version, definition, digest, source, created_at
FROM agent_definitions
WHERE role = $1 AND version = $2;

-- name: agent_definition_history
-- Every version of a role, newest first.
SELECT role, version, definition, digest, source, created_at
FROM agent_definitions
WHERE role = $1
ORDER BY version DESC;

-- 0017: declarative agents: a role defined as data (prompts, model, output schema, limits).
--
-- Every change of a role's definition is a new row with the next version, never an update:
-- a task records the version it ran with, so the text it ran with must stay readable. The
-- API's PUT /v1/agents/{role} and a worker's --agents file write here; workers poll the
-- latest version of the roles they serve. `digest` is the SHA-256 of the definition's
-- canonical JSON, so a file loaded again unchanged adds no version. Not tenant-owned: a
-- definition is an operator's, like a plan.
CREATE TABLE agent_definitions (
    role        text NOT NULL,
    version     integer NOT NULL CHECK (version >= 1),
    definition  jsonb NOT NULL,
    digest      bytea NOT NULL,
    source      text NOT NULL CHECK (source IN ('api', 'file')),
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (role, version)
);

-- 0004: weighted fair queueing. Each (queue, tenant) has a virtual clock; a tenant's next
-- task gets max(its clock, the queue's virtual time) + 1/weight as its fairness_key, so a
-- flood from one tenant lines up behind everyone else's next task.
CREATE TABLE fairness_clocks (
    queue      text NOT NULL,
    tenant_id  text NOT NULL,
    clock      double precision NOT NULL,
    span       double precision NOT NULL,
    PRIMARY KEY (queue, tenant_id)
);

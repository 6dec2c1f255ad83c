-- Argo CD health of a pilotboat.dev OwnedDatabase, from the status the operator writes.
--   Healthy      the database, its role and the owner's credentials Secret exist
--   Degraded     refused (invalid, another service owns it, its DatabaseServer is missing,
--                does not admit the namespace or lacks its admin Secret), or the server failed it
--   Progressing  not created yet (waiting for the server), or being dropped
local hs = { status = "Progressing", message = "Waiting for the operator" }

local status = obj.status
if status == nil or status.phase == nil or status.observedGeneration == nil
    or status.observedGeneration < (obj.metadata.generation or 0) then
  return hs
end

local ready = nil
for _, c in ipairs(status.conditions or {}) do
  if c.type == "Ready" then ready = c end
end
hs.message = (ready and ready.message) or status.phase

-- Refusals (phase Refused) and failures a person must fix; an unreachable server may be a
-- matter of seconds, so it stays Progressing.
local refused = { InvalidSpec = true, DatabaseOwnedByAnother = true, DatabaseFailed = true }
if status.phase == "Ready" then
  hs.status = "Healthy"
elseif status.phase == "Refused" or (ready ~= nil and refused[ready.reason]) then
  hs.status = "Degraded"
else
  hs.status = "Progressing"
end
return hs

-- Argo CD health of a pilotboat.dev OwnedDatabase, from the status the operator writes.
--   Healthy      the database, its role and the owner's credentials Secret exist
--   Degraded     refused (invalid, or another service owns it), or the server failed it
--   Progressing  not created yet (waiting for its admin Secret or server), or being dropped
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

-- Refusals and failures a person must fix; a missing admin Secret or an unreachable server
-- may be a matter of seconds (the Secret syncs in the same wave), so those stay Progressing.
local refused = { InvalidSpec = true, DatabaseOwnedByAnother = true, DatabaseFailed = true }
if status.phase == "Ready" then
  hs.status = "Healthy"
elseif status.phase == "Refused" or (ready ~= nil and refused[ready.reason]) then
  hs.status = "Degraded"
else
  hs.status = "Progressing"
end
return hs

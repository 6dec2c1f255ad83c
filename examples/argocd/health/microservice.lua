-- Argo CD health of a pilotboat.dev Microservice, from the status the operator writes.
--   Progressing  the operator has not seen this generation yet, or a release is under way
--   Suspended    a release is paused (for a time, or until someone promotes it)
--   Degraded     the spec is refused, the database claim is refused, or the release rolled back
--   Healthy      every replica runs the declared version
local hs = { status = "Progressing", message = "Waiting for the operator" }

local function condition(status, type_)
  for _, c in ipairs(status.conditions or {}) do
    if c.type == type_ then return c end
  end
  return nil
end

local status = obj.status
if status == nil or status.observedGeneration == nil
    or status.observedGeneration < (obj.metadata.generation or 0) then
  return hs
end

local valid = condition(status, "SpecValid")
if valid ~= nil and valid.status == "False" then
  hs.status = "Degraded"
  hs.message = valid.message or "the spec is invalid"
  return hs
end
local claim = condition(status, "DatabaseClaimed")
if claim ~= nil and claim.status == "False" and claim.reason == "DatabaseOwnedByAnother" then
  hs.status = "Degraded"
  hs.message = claim.message or "the owned database belongs to another service"
  return hs
end

local phase = status.phase
if phase == "Degraded" then
  hs.status = "Degraded"
  hs.message = status.message or "the release was rolled back"
elseif phase == "Paused" then
  hs.status = "Suspended"
  hs.message = status.pauseReason or status.message or "paused"
elseif phase == "Progressing" then
  hs.status = "Progressing"
  local weight = status.canaryWeight or 0
  hs.message = string.format("canary %s at %d%%: %s", status.canaryVersion or "-", weight,
    status.message or "releasing")
elseif phase == "Healthy" then
  local ready = condition(status, "Ready")
  if ready ~= nil and ready.status == "True" then
    hs.status = "Healthy"
    hs.message = status.message or ("running " .. (status.stableVersion or "?"))
  else
    hs.status = "Progressing"
    hs.message = (ready and ready.message) or "replicas are not ready yet"
  end
end
return hs
